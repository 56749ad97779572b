import { expect, test } from 'vitest'
import { createWorkerPool, SandboxError } from '../../sandbox/index.ts'

const MB = 1024 * 1024
const info = { name: 'fn', version: 1, config: {}, now: 1_700_000_000_000 }
const DOUBLE = 'export default { onMessage(msg) { return msg.v * 2 } }'

async function errorOf(run: () => Promise<unknown>): Promise<SandboxError> {
  try {
    await run()
  } catch (error) {
    if (error instanceof SandboxError) return error
    throw error
  }
  throw new Error('expected a SandboxError')
}

test('functions of several tenants compile and run in worker threads', async () => {
  await using pool = createWorkerPool({ size: 2, memoryLimitBytes: 32 * MB })
  for (const tenant of ['a', 'b', 'c']) await pool.compile(tenant, 'double', DOUBLE, ['onMessage'])
  const values = await Promise.all(
    ['a', 'b', 'c'].map((tenant, i) => pool.invoke(tenant, 'double', 'onMessage', [{ v: i + 1 }], info, 100)),
  )
  expect(values.map((result) => result.value)).toEqual([2, 4, 6])
})

test('compile errors and deadlines come back as SandboxErrors with their codes', async () => {
  await using pool = createWorkerPool({ size: 1, memoryLimitBytes: 32 * MB })
  const compile = await errorOf(() =>
    pool.compile('a', 'bad', 'export default {\n  onMessage(msg) {\n    return msg.x +* 2\n  },\n}', [
      'onMessage',
    ]),
  )
  expect(compile).toMatchObject({ code: 'invalid_function', line: 3, column: 19 })
  await pool.compile('a', 'spin', 'export default { onMessage() { for (;;) {} } }', ['onMessage'])
  expect((await errorOf(() => pool.invoke('a', 'spin', 'onMessage', [{}], info, 20))).code).toBe('deadline')
})

test('a replaced worker gets its tenants back; invocations in flight fail, later ones succeed', async () => {
  await using pool = createWorkerPool({ size: 1, memoryLimitBytes: 32 * MB })
  await pool.compile('a', 'double', DOUBLE, ['onMessage'])
  await pool.compile('a', 'slow', 'export default { onMessage() { for (;;) {} } }', ['onMessage'])
  const inFlight = errorOf(() => pool.invoke('a', 'slow', 'onMessage', [{}], info, 5_000))
  await pool.restartWorkerOf('a')
  expect((await inFlight).code).toBe('broken')
  expect(pool.restarts).toBe(1)
  expect((await pool.invoke('a', 'double', 'onMessage', [{ v: 21 }], info, 1_000)).value).toBe(42)
})

test('a removed function is forgotten by the worker and not compiled again after a restart', async () => {
  await using pool = createWorkerPool({ size: 1, memoryLimitBytes: 32 * MB })
  await pool.compile('a', 'double', DOUBLE, ['onMessage'])
  await pool.remove('a', 'double')
  expect((await errorOf(() => pool.invoke('a', 'double', 'onMessage', [{ v: 1 }], info, 100))).code).toBe(
    'handler_threw',
  )
  await pool.restartWorkerOf('a')
  expect((await errorOf(() => pool.invoke('a', 'double', 'onMessage', [{ v: 1 }], info, 100))).code).toBe(
    'handler_threw',
  )
})
