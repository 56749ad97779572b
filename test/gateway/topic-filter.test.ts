import { describe, expect, test } from 'vitest'
import { compileAcl, isValidFilter } from '../../gateway/acl.ts'
import { filterCovers, filtersOverlap } from '../../gateway/topic-filter.ts'

describe('filterCovers()', () => {
  test.each([
    ['sport/tennis/#', 'sport/tennis/player1', true],
    ['sport/tennis/#', 'sport/tennis/player1/ranking', true],
    ['sport/#', 'sport', true], // [MQTT-4.7.1-2]: the parent level too
    ['#', 'anything/at/all', true],
    ['sport/+', 'sport/tennis', true],
    ['sport/+', 'sport/tennis/x', false],
    ['sport/+', 'sport', false],
    ['+/+', '/finance', true], // empty levels are levels
    ['/+', '/finance', true],
    ['+', '/finance', false],
    ['a/b', 'a/b', true],
    ['a/b', 'a/c', false],
    ['a/b', 'a', false],
    ['a', 'a/b', false],
  ])('%s covers topic %s: %s', (filter, topic, expected) => {
    expect(filterCovers(filter, topic)).toBe(expected)
  })

  test.each([
    ['a/+', 'a/+', true],
    ['a/#', 'a/+', true],
    ['a/#', 'a/#', true],
    ['#', 'a/+/#', true],
    ['a/+', 'a/#', false],
    ['a/b', 'a/+', false],
    ['a/+/c', 'a/#', false],
  ])('%s covers filter %s: %s', (filter, subject, expected) => {
    expect(filterCovers(filter, subject)).toBe(expected)
  })
})

describe('filtersOverlap()', () => {
  test.each([
    ['#', 'secret/x', true],
    ['a/+', 'a/b', true],
    ['a/+', 'b/+', false],
    ['a/b', 'a/b/c', false],
    ['a/+/c', 'a/b/#', true],
  ])('%s and %s overlap: %s', (a, b, expected) => {
    expect(filtersOverlap(a, b)).toBe(expected)
    expect(filtersOverlap(b, a)).toBe(expected)
  })
})

describe('isValidFilter()', () => {
  test.each([
    ['a/#', true],
    ['#', true],
    ['+/x/+', true],
    ['a#', false],
    ['a/#/b', false],
    ['a+/b', false],
    ['', false],
    ['a\u0000b', false],
  ])('%j is valid: %s', (filter, expected) => {
    expect(isValidFilter(filter)).toBe(expected)
  })
})

describe('compileAcl()', () => {
  test('no rules compile to null: everything in the tenant is allowed', () => {
    expect(compileAcl([], [])).toBeNull()
  })

  test('the first matching rule decides, device rules before tenant rules', () => {
    const acl = compileAcl(
      [{ action: 'publish', filter: 'cmd/own', permission: 'allow' }],
      [
        { action: 'publish', filter: 'cmd/#', permission: 'deny' },
        { action: 'all', filter: 'logs/#', permission: 'deny' },
      ],
    )
    expect(acl?.publish('cmd/own')).toBe(true)
    expect(acl?.publish('cmd/other')).toBe(false)
    expect(acl?.publish('data/x')).toBe(true)
    expect(acl?.publish('logs/a')).toBe(false)
    expect(acl?.subscribe('logs/#')).toBe(false)
    expect(acl?.subscribe('cmd/#')).toBe(true) // publish rules do not govern subscriptions
  })

  test('a subscription wider than a deny rule is granted but the denied topics are not delivered', () => {
    const acl = compileAcl([], [{ action: 'subscribe', filter: 'secret/#', permission: 'deny' }])
    expect(acl?.subscribe('#')).toBe(true)
    expect(acl?.subscribe('secret/+')).toBe(false)
    expect(acl?.deliver('secret/key')).toBe(false)
    expect(acl?.deliver('public/x')).toBe(true)
  })
})
