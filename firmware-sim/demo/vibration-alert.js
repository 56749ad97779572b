// An event-driven alert: each device's vibration level (rms) is tracked as an exponentially
// weighted mean and variance; a reading far above what the device usually does raises an alert on
// alerts/DEVICE and in the cloud stream `alerts`. The per-device statistics live in the function's
// state, so they survive restarts and redeploys.
// Trigger: sensors/+/vibration.

export default {
  onMessage(msg, ctx) {
    const { rms, peak, ts } = msg.payload ?? {}
    if (typeof rms !== 'number' || !Number.isFinite(rms)) return undefined
    const { alpha, threshold, warmup } = ctx.config
    const key = `ewma/${msg.device}`
    const stats = ctx.state.get(key) ?? { mean: rms, variance: 0, n: 0 }
    const deviation = rms - stats.mean
    const sd = Math.sqrt(stats.variance)
    const score = sd > 0 ? deviation / sd : 0
    const anomalous = stats.n >= warmup && score > threshold
    if (anomalous) {
      const alert = {
        device: msg.device,
        rms,
        peak,
        mean: Math.round(stats.mean * 100) / 100,
        score: Math.round(score * 10) / 10,
        ts: ts ?? msg.ts,
      }
      ctx.publish(`alerts/${msg.device}`, alert, { qos: 1 })
      ctx.emit(alert, { stream: 'alerts' })
    } else {
      // Anomalies do not move the baseline, so a burst of them keeps alerting.
      stats.mean += alpha * deviation
      stats.variance = (1 - alpha) * (stats.variance + alpha * deviation * deviation)
    }
    stats.n += 1
    ctx.state.set(key, stats, { ttlMs: 86_400_000 })
    return undefined
  },
}
