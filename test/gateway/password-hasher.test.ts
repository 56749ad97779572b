import { expect, test } from 'vitest'
import { createPasswordHasher, generateSecret } from '../../gateway/password-hasher.ts'

const CHEAP = { opsLimit: 1, memLimitBytes: 8192 }

test('hash() makes an Argon2id string that verify() accepts for the secret and refuses otherwise', async () => {
  await using hasher = createPasswordHasher(CHEAP)
  const secret = generateSecret()
  const hash = await hasher.hash(secret)
  expect(hash).toMatch(/^\$argon2id\$v=19\$m=8,t=1,p=1\$/)
  expect(await hasher.verify(hash, secret)).toBe(true)
  expect(await hasher.verify(hash, secret)).toBe(true) // from the cache
  expect(await hasher.verify(hash, `${secret}x`)).toBe(false)
  expect(await hasher.verify(hash, '')).toBe(false)
})

test('the production defaults are Argon2id with 19 MiB and 2 passes', async () => {
  await using hasher = createPasswordHasher()
  expect(await hasher.hash('s')).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/)
})

test('a malformed hash is an error, not a crash', async () => {
  await using hasher = createPasswordHasher(CHEAP)
  await expect(hasher.verify('not-a-hash', 'x')).resolves.toBe(false)
})

test('close() is idempotent, rejects waiting jobs and refuses new ones', async () => {
  const hasher = createPasswordHasher(CHEAP)
  const pending = hasher.hash('a').then(
    () => 'resolved',
    (error: Error) => error.message,
  )
  await hasher.close()
  await hasher.close()
  expect(await pending).toMatch(/hasher closed/)
  await expect(hasher.hash('b')).rejects.toThrow(/hasher is closed/)
})

test('jobs past the queue bound are refused with limit_reached', async () => {
  await using hasher = createPasswordHasher({ ...CHEAP, maxQueued: 2 })
  const jobs = [hasher.hash('a'), hasher.hash('b')]
  await expect(hasher.hash('c')).rejects.toMatchObject({ code: 'limit_reached' })
  await Promise.all(jobs)
})

test('generateSecret() gives 32 base64url characters, different each time', () => {
  const a = generateSecret()
  expect(a).toMatch(/^[A-Za-z0-9_-]{32}$/)
  expect(generateSecret()).not.toBe(a)
})

test('the worker starts with the first job, exits when idle, and starts again for the next', async () => {
  await using hasher = createPasswordHasher({ ...CHEAP, idleExitMs: 50 })
  expect(hasher.running).toBe(false)
  const hash = await hasher.hash('secret')
  expect(hasher.running).toBe(true)
  const start = Date.now()
  while (hasher.running && Date.now() - start < 5000) await new Promise((resolve) => setTimeout(resolve, 10))
  expect(hasher.running).toBe(false)
  // A new worker answers, and a wrong secret is still checked in full.
  expect(await hasher.verify(hash, 'wrong')).toBe(false)
  expect(hasher.running).toBe(true)
  expect(await hasher.verify(hash, 'secret')).toBe(true)
})
