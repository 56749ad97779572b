// A transformation: temperature readings in degrees Celsius become Fahrenheit, and readings a
// sensor cannot make (outside its range, or not numbers) are dropped with a log line.
// Trigger: sensors/+/temperature. Output topic: readings/fahrenheit. Cloud stream: temperature.

export default {
  onMessage(msg, ctx) {
    const { c, ts } = msg.payload ?? {}
    const { minC, maxC } = ctx.config
    if (typeof c !== 'number' || c < minC || c > maxC) {
      ctx.log(`dropped a reading of ${msg.device}: ${JSON.stringify(msg.payload)}`)
      return undefined
    }
    const reading = { device: msg.device, f: Math.round((c * 1.8 + 32) * 10) / 10, ts: ts ?? msg.ts }
    ctx.emit(reading, { stream: 'temperature' })
    return reading
  },
}
