import { randomBytes } from 'node:crypto'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, expect, test } from 'vitest'
import {
  createSqliteCloudStore,
  createThreadedSqliteCloudStore,
  type IncomingRecord,
} from '../../sync/index.ts'
import { tempDir } from '../helpers/temp.ts'

const dirs: string[] = []
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})
const file = () => {
  const dir = tempDir()
  dirs.push(dir)
  return join(dir, 'cloud.db')
}
const record = (seq: number): IncomingRecord => ({
  seq,
  tenant: 'acme',
  function: 'avg',
  stream: 'temps',
  createdAt: 1_000 + seq,
  body: JSON.stringify({ seq }),
})

test('the SQLite store in a worker thread answers as the store does, errors included, on the same file', async () => {
  const path = file()
  const key = randomBytes(32).toString('base64')
  {
    await using store = await createThreadedSqliteCloudStore({ file: path })
    expect(await store.addGateway('gw1', key)).toMatchObject({ name: 'gw1', publicKey: key })
    await expect(store.addGateway('gw2', key)).rejects.toMatchObject({ name: 'SyncError', code: 'conflict' })
    await expect(store.addGateway('Bad Name', randomBytes(32).toString('base64'))).rejects.toThrow(RangeError)
    expect(await store.acceptHandshake('gw1', 10n, 5)).toBe(true)
    expect(await store.acceptHandshake('gw1', 10n, 6)).toBe(false)
    expect(await store.storeRecords('gw1', [record(1), record(2), record(1)], 7)).toEqual({
      stored: 2,
      duplicates: 1,
    })
    expect((await store.gatewayByKey(key))?.name).toBe('gw1')
    expect(await store.count({ gateway: 'gw1' })).toBe(2)
    await store.close()
    await expect(store.count()).rejects.toMatchObject({ code: 'closed' })
  }
  // What it wrote is what the store on this thread reads.
  await using again = await createSqliteCloudStore({ file: path })
  expect((await again.records({ gateway: 'gw1' })).map((r) => r.seq)).toEqual([1, 2])
  expect((await again.listGateways())[0]).toMatchObject({ name: 'gw1', lastHandshakeTimestamp: 10n })
})

test('a store the worker cannot open fails to open, with the reason', async () => {
  await expect(createThreadedSqliteCloudStore({ file: '/nonexistent-dir/cloud.db' })).rejects.toThrow(
    /Cannot/,
  )
})
