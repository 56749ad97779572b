import { rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { afterEach, describe, expect, test } from 'vitest'
import { GatewayError } from '../../gateway/errors.ts'
import { MIGRATIONS } from '../../gateway/migrations.ts'
import { createStore } from '../../gateway/store.ts'
import { tempDir } from '../helpers/temp.ts'

const dirs: string[] = []
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})
function dbFile(): string {
  const dir = tempDir()
  dirs.push(dir)
  return join(dir, 'taureau.db')
}

describe('createStore()', () => {
  test('creates a WAL database at the latest schema version, readable only by its owner', () => {
    const file = dbFile()
    using store = createStore({ file })
    expect(store.db.pragma('journal_mode', { simple: true })).toBe('wal')
    expect(store.db.pragma('user_version', { simple: true })).toBe(MIGRATIONS.length)
    expect(statSync(file).mode & 0o777).toBe(0o600)
  })

  test('data survives closing and reopening; migrations are not re-run', () => {
    const file = dbFile()
    {
      using store = createStore({ file })
      store.createTenant('acme', { maxConnections: 3 })
      store.createDevice('acme', 'd1', '$argon2id$fake')
      store.replaceAclRules('acme', 'd1', [{ action: 'publish', filter: 'a/#', permission: 'deny' }])
    }
    using store = createStore({ file })
    expect(store.getTenant('acme')?.quotaOverrides).toEqual({ maxConnections: 3 })
    expect(store.listDevices('acme').map((d) => d.deviceId)).toEqual(['d1'])
    expect(store.listAclRules('acme', 'd1')).toEqual([
      { action: 'publish', filter: 'a/#', permission: 'deny' },
    ])
  })

  test('a database from a newer gateway is refused rather than damaged', () => {
    const file = dbFile()
    const db = new Database(file)
    db.pragma(`user_version = ${MIGRATIONS.length + 1}`)
    db.close()
    expect(() => createStore({ file })).toThrow(/newer than this gateway knows/)
  })

  test('deleting a tenant removes its devices and rules; deleting a device removes its rules', () => {
    using store = createStore({ file: dbFile() })
    store.createTenant('acme')
    store.createDevice('acme', 'd1', 'h')
    store.createDevice('acme', 'd2', 'h')
    store.replaceAclRules('acme', null, [{ action: 'all', filter: '#', permission: 'allow' }])
    store.replaceAclRules('acme', 'd1', [{ action: 'all', filter: 'x', permission: 'deny' }])
    expect(store.deleteDevice('acme', 'd1')).toBe(true)
    expect(store.listAclRules('acme', 'd1')).toEqual([])
    expect(store.deleteTenant('acme')).toBe(true)
    store.createTenant('acme')
    expect(store.listDevices('acme')).toEqual([])
    expect(store.listAclRules('acme', null)).toEqual([])
  })

  test('conflicts and missing rows are domain errors with stable codes', () => {
    using store = createStore({ file: dbFile() })
    store.createTenant('acme')
    const codeOf = (run: () => unknown) => {
      try {
        run()
      } catch (error) {
        return (error as GatewayError).code
      }
      return 'no error'
    }
    expect(codeOf(() => store.createTenant('acme'))).toBe('conflict')
    expect(codeOf(() => store.createDevice('ghost', 'd', 'h'))).toBe('not_found')
    expect(codeOf(() => store.setDeviceSecret('acme', 'ghost', 'h'))).toBe('not_found')
    expect(codeOf(() => store.replaceAclRules('acme', 'ghost', []))).toBe('not_found')
  })

  test('replacing ACL rules is atomic: a failing rule leaves the old list', () => {
    using store = createStore({ file: dbFile() })
    store.createTenant('acme')
    const old = [{ action: 'all' as const, filter: 'a', permission: 'deny' as const }]
    store.replaceAclRules('acme', null, old)
    const broken = [
      { action: 'all' as const, filter: 'b', permission: 'deny' as const },
      { action: 'nope' as never, filter: 'c', permission: 'deny' as const },
    ]
    expect(() => store.replaceAclRules('acme', null, broken)).toThrow()
    expect(store.listAclRules('acme', null)).toEqual(old)
  })

  test('close() is idempotent', () => {
    const store = createStore({ file: dbFile() })
    store.close()
    store.close()
    expect(store.db.open).toBe(false)
  })
})

test('GatewayError carries a code, a field and the cause', () => {
  const cause = new Error('disk')
  const error = new GatewayError('internal', 'Cannot write as the disk failed', { cause, field: 'x' })
  expect(error).toMatchObject({ name: 'GatewayError', code: 'internal', field: 'x', cause })
})
