import { expect, test } from 'vitest'
import { cronProblem, deploySchema, parseDuration } from '../../gateway/function-spec.ts'
import { decodePayload, encodePayload, jsonDepth, MAX_JSON_DEPTH } from '../../gateway/payload.ts'

test('parseDuration() reads ms, s, m, h and d and refuses anything else', () => {
  expect(parseDuration('500ms')).toBe(500)
  expect(parseDuration('10s')).toBe(10_000)
  expect(parseDuration('1.5m')).toBe(90_000)
  expect(parseDuration('2h')).toBe(7_200_000)
  expect(parseDuration('1d')).toBe(86_400_000)
  for (const bad of ['', '10', 's', '-1s', '1 y', '1e3s', 'ten seconds'])
    expect(parseDuration(bad)).toBeUndefined()
})

test('cronProblem() accepts 5 and 6 field expressions and names what is wrong with others', () => {
  expect(cronProblem('*/5 * * * *', undefined)).toBeUndefined()
  expect(cronProblem('30 */2 * * * *', undefined)).toBeUndefined()
  expect(cronProblem('0 9 * * 1-5', 'Europe/Paris')).toBeUndefined()
  expect(cronProblem('61 * * * *', undefined)).toMatch(/is not a cron expression/)
  expect(cronProblem('* * *', undefined)).toMatch(/five, six, or seven/)
  expect(cronProblem('0 9 * * *', 'Mars/Olympus')).toMatch(/timezone/i)
  expect(cronProblem('0 0 30 2 *', undefined)).toBe('never fires')
})

test('the deploy schema refuses bad names, triggers, outputs and oversized config', () => {
  const base = { name: 'f', source: 'x', triggers: [{ topic: 'a/+' }] }
  expect(deploySchema.safeParse(base).success).toBe(true)
  const problems = [
    { ...base, name: 'Has Caps' },
    { ...base, triggers: [] },
    { ...base, triggers: [{ topic: '$SYS/#' }] },
    { ...base, triggers: [{ every: '100ms' }] },
    { ...base, triggers: [{ every: '8d' }] },
    { ...base, triggers: [{ topic: 'a', every: '1s' }] },
    { ...base, output: 'out/+' },
    { ...base, output: '../other' },
    { ...base, output: '$SYS/x' },
    { ...base, limits: { memoryMb: 0 } },
    { ...base, config: { big: 'x'.repeat(70_000) } },
    { ...base, extra: true },
  ]
  for (const body of problems)
    expect(deploySchema.safeParse(body).success, JSON.stringify(body).slice(0, 80)).toBe(false)
})

test('payloads decode to JSON, else text, else bytes, and values encode back', () => {
  expect(decodePayload(Buffer.from('{"a":[1,2]}'))).toEqual({ a: [1, 2] })
  expect(decodePayload(Buffer.from(' 42 '))).toBe(42)
  expect(decodePayload(Buffer.from('true'))).toBe(true)
  expect(decodePayload(Buffer.from('"quoted"'))).toBe('quoted')
  expect(decodePayload(Buffer.from('{not json'))).toBe('{not json')
  expect(decodePayload(Buffer.from('héllo'))).toBe('héllo')
  expect(decodePayload(Buffer.alloc(0))).toBe('')
  const bytes = decodePayload(Buffer.from([0xc3, 0x28, 0x00]))
  expect(bytes).toBeInstanceOf(Uint8Array)
  expect([...(bytes as Uint8Array)]).toEqual([0xc3, 0x28, 0x00])
  expect(encodePayload({ a: 1 }).toString()).toBe('{"a":1}')
  expect(encodePayload('text').toString()).toBe('text')
  expect([...encodePayload(new Uint8Array([1, 2]))]).toEqual([1, 2])
  expect(encodePayload(null).toString()).toBe('null')
  expect(decodePayload(Buffer.from('true\n'))).toBe(true)
})

test('JSON nested deeper than the bound reaches the function as text, brackets in strings aside', () => {
  expect(jsonDepth('{"a":[1,{"b":"[[[["}]}')).toBe(3)
  const deep = `${'['.repeat(MAX_JSON_DEPTH + 1)}${']'.repeat(MAX_JSON_DEPTH + 1)}`
  expect(decodePayload(Buffer.from(deep))).toBe(deep)
  const edge = `${'['.repeat(MAX_JSON_DEPTH)}${']'.repeat(MAX_JSON_DEPTH)}`
  expect(Array.isArray(decodePayload(Buffer.from(edge)))).toBe(true)
})
