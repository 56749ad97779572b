import { join } from 'node:path'
import { describe, expect, test } from 'vitest'
import { createAccounts, MAX_SESSIONS_PER_OWNER } from '../../gateway/accounts.ts'
import { createStore } from '../../gateway/store.ts'
import { tempDir } from '../helpers/temp.ts'

describe('accounts', () => {
  test('one owner keeps at most MAX_SESSIONS_PER_OWNER sessions: signing in again ends the oldest', () => {
    using store = createStore({ file: join(tempDir(), 'store.db') })
    let clock = 1_000
    const accounts = createAccounts(store.db, {
      sessionIdleMs: 3_600_000,
      sessionMaxMs: 3_600_000,
      now: () => clock,
    })
    const token = store.createToken('hash', null, 'admin')
    const ids: string[] = []
    for (let i = 0; i < MAX_SESSIONS_PER_OWNER + 2; i++) {
      clock++
      ids.push(accounts.createSession({ tokenId: token.id, tenantId: null }).id)
    }
    expect(accounts.findSession(ids[0] as string)).toBeUndefined()
    expect(accounts.findSession(ids[1] as string)).toBeUndefined()
    expect(accounts.findSession(ids[2] as string)).toBeDefined()
    expect(accounts.findSession(ids.at(-1) as string)).toBeDefined()
    const count = store.db.prepare('SELECT count(*) AS n FROM ui_sessions').get() as { n: number }
    expect(count.n).toBe(MAX_SESSIONS_PER_OWNER)
    // Another owner's sessions are not touched.
    accounts.createUser('ann', 'x', null)
    const own = accounts.createSession({ userName: 'ann', tenantId: null }).id
    expect(accounts.findSession(own)).toBeDefined()
    expect(accounts.findSession(ids.at(-1) as string)).toBeDefined()
  })
})
