import { describe, expect, test } from 'vitest'
import { parseDeviceCredentials } from '../../firmware-sim/credentials.ts'
import { deviceIds } from '../../firmware-sim/provision.ts'

describe('device ids', () => {
  test('deviceIds() numbers from 1, zero-padded to the width of the count and at least 4 digits', () => {
    expect(deviceIds(3)).toEqual(['sim-0001', 'sim-0002', 'sim-0003'])
    expect(deviceIds(12_000, 'line-a').slice(-1)).toEqual(['line-a-12000'])
    expect(deviceIds(12_000)[0]).toBe('sim-00001')
    expect(deviceIds(0)).toEqual([])
  })

  test('deviceIds() refuses a count or prefix that cannot make valid device ids', () => {
    expect(() => deviceIds(-1)).toThrow(RangeError)
    expect(() => deviceIds(1.5)).toThrow(RangeError)
    expect(() => deviceIds(2, 'bad/prefix')).toThrow(/Cannot make device ids with the prefix 'bad\/prefix'/)
    expect(() => deviceIds(2, 'x'.repeat(124))).toThrow(RangeError)
  })
})

describe('credentials lists', () => {
  test('a list as --save writes it is accepted', () => {
    const list = [{ id: 'sim-0001', username: 'sim-0001@acme', password: 'secret' }]
    expect(parseDeviceCredentials(list)).toEqual(list)
  })

  test('a bad list is refused naming the entry and the problem', () => {
    const cases: Array<[unknown, RegExp]> = [
      [{}, /as the list is invalid/],
      [[], /must list at least one device/],
      [[{ id: 'a', username: 'a@t' }], /entry 0\.password is invalid/],
      [
        [{ id: 'a/b', username: 'a@t', password: 'p' }],
        /entry 0\.id is invalid: must not be empty or contain '\/'/,
      ],
      [[{ id: 'a', username: 'a@t', password: 'p', extra: 1 }], /entry 0 is invalid/],
      [
        [
          { id: 'a', username: 'a@t', password: 'p' },
          { id: 'a', username: 'a@t', password: 'q' },
        ],
        /the id 'a' appears twice/,
      ],
    ]
    for (const [value, message] of cases) {
      expect(() => parseDeviceCredentials(value), JSON.stringify(value)).toThrow(message)
    }
    expect(() => parseDeviceCredentials([])).toThrow(expect.objectContaining({ code: 'invalid_credentials' }))
  })
})
