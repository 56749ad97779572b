// A periodic rollup: every reading of the tenant joins a one-minute tumbling window (by the
// gateway's receive time) holding a Count-Min sketch of readings per device, the devices it
// estimates heaviest, and a HyperLogLog of distinct devices. Each window that closes goes to the
// cloud stream `rollup` as one small record. The `every` trigger closes windows when traffic stops.
// The window is kept in the function's state, so its size is what every reading reads and writes:
// the sketches are sized for a site's fleet (a few thousand devices), not for the internet.
// Triggers: sensors/#, every 15s.
import { CountMin, HyperLogLog } from 'taureau:sketch'
import { TumblingWindow } from 'taureau:window'

function windowOptions(config) {
  const { windowMs, topN, countMinWidth, countMinDepth, hllPrecision } = config
  return {
    sizeMs: windowMs,
    init: () => ({
      readings: 0,
      counts: new CountMin({ width: countMinWidth, depth: countMinDepth }),
      devices: new HyperLogLog({ precision: hllPrecision }),
      heavy: {},
    }),
    reduce(acc, device) {
      acc.readings += 1
      acc.counts.add(device)
      acc.devices.add(device)
      // Heavy-hitter candidates: the devices with the highest Count-Min estimates, pruned to topN
      // whenever there are twice as many.
      acc.heavy[device] = acc.counts.estimate(device)
      const candidates = Object.entries(acc.heavy)
      if (candidates.length > 2 * topN) {
        candidates.sort((a, b) => b[1] - a[1])
        acc.heavy = Object.fromEntries(candidates.slice(0, topN))
      }
    },
    revive: (acc) => ({
      ...acc,
      counts: CountMin.fromJSON(acc.counts),
      devices: HyperLogLog.fromJSON(acc.devices),
    }),
  }
}

/** Runs `step` on the window kept in state, emits the windows it closes, and keeps the window. */
function withWindow(ctx, step) {
  const options = windowOptions(ctx.config)
  const saved = ctx.state.get('window')
  const window = saved === undefined ? new TumblingWindow(options) : TumblingWindow.fromJSON(saved, options)
  for (const { start, end, value } of step(window)) {
    const heavyHitters = Object.keys(value.heavy)
      .map((device) => ({ device, readings: value.counts.estimate(device) }))
      .sort((a, b) => b.readings - a.readings)
      .slice(0, ctx.config.topN)
    ctx.emit(
      {
        start: new Date(start).toISOString(),
        end: new Date(end).toISOString(),
        readings: value.readings,
        distinctDevices: value.devices.count(),
        heavyHitters,
      },
      { stream: 'rollup' },
    )
  }
  ctx.state.set('window', window.toJSON())
}

export default {
  onMessage(msg, ctx) {
    // Readings of devices only: not what functions publish.
    if (msg.device !== null) withWindow(ctx, (window) => window.add(msg.ts, msg.device))
    return undefined
  },
  onSchedule(ctx) {
    withWindow(ctx, (window) => window.advance(ctx.now()))
  },
}
