// A state machine across messages: each device is online, offline or in alarm. The devices'
// retained status messages (status/DEVICE: online, or offline from their will) and the alerts of
// vibration-alert (alerts/DEVICE) move it; an alarm clears after `clearAfterMs` without alerts.
// Every change is published retained on state/DEVICE, kept in the tenant's shared state namespace
// `fleet` (visible on the UI's state page) and sent to the cloud stream `device-status`.
// Triggers: status/+, alerts/+, every 30s.

function move(ctx, fleet, device, to, reason) {
  const current = fleet.get(device) ?? { state: 'unknown', since: 0 }
  if (current.state === to) {
    if (to === 'alarm') fleet.set(device, { ...current, lastAlertAt: ctx.now() })
    return
  }
  const next = { state: to, since: ctx.now(), ...(to === 'alarm' ? { lastAlertAt: ctx.now() } : {}) }
  fleet.set(device, next)
  const change = { device, from: current.state, to, reason, at: new Date(ctx.now()).toISOString() }
  ctx.publish(`state/${device}`, change, { qos: 1, retain: true })
  ctx.emit(change, { stream: 'device-status' })
}

export default {
  onMessage(msg, ctx) {
    const [kind, device] = msg.topic.split('/')
    const fleet = ctx.state.ns('fleet')
    if (kind === 'status') {
      if (msg.payload === 'offline') move(ctx, fleet, device, 'offline', 'will or sign-off')
      else if (msg.payload === 'online' && fleet.get(device)?.state !== 'alarm')
        move(ctx, fleet, device, 'online', 'connected')
    } else if (kind === 'alerts') {
      move(ctx, fleet, device, 'alarm', `vibration ${msg.payload?.rms} mm/s, score ${msg.payload?.score}`)
    }
    return undefined
  },
  onSchedule(ctx) {
    const fleet = ctx.state.ns('fleet')
    let after
    for (;;) {
      const keys = fleet.keys('', { after, limit: 1000 })
      for (const device of keys) {
        const entry = fleet.get(device)
        if (entry?.state === 'alarm' && ctx.now() - entry.lastAlertAt >= ctx.config.clearAfterMs) {
          move(ctx, fleet, device, 'online', 'no alert since the alarm')
        }
      }
      if (keys.length < 1000) break
      after = keys[keys.length - 1]
    }
  },
}
