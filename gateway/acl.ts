import { z } from 'zod'
import type { AclRuleRecord } from './store.ts'
import { filterCovers } from './topic-filter.ts'

/** Schema of one ACL rule as the API takes it: a valid MQTT topic filter, relative to the tenant. */
export const aclRuleSchema = z
  .object({
    action: z.enum(['publish', 'subscribe', 'all']),
    filter: z
      .string()
      .min(1)
      .max(1024)
      .refine(isValidFilter, { message: 'must be a valid MQTT topic filter (section 4.7.1)' })
      .refine((filter) => !filter.startsWith('$'), { message: "must not start with '$' (reserved topics)" }),
    permission: z.enum(['allow', 'deny']),
  })
  .strict()

/** An ordered rule list: the first rule that matches decides; no match means allow. */
export const aclRulesSchema = z.array(aclRuleSchema).max(256)

/**
 * The compiled access rules of one device: its own rules first, then its tenant's. The first rule
 * whose filter matches decides; when none matches, everything inside the tenant is allowed.
 *
 * - `publish(topic)`: may the device publish to `topic`?
 * - `subscribe(filter)`: is the subscription granted (SUBACK) or refused with 0x80? A rule decides a
 *   subscription when its filter covers the whole subscription filter.
 * - `deliver(topic)`: may a message on `topic` reach the device? A subscription wider than a deny
 *   rule (say `#` against a deny on `secret/#`) is granted, and the denied topics are held back here
 *   at delivery, as mosquitto does with its read ACLs.
 */
export interface Acl {
  publish(topic: string): boolean
  subscribe(filter: string): boolean
  deliver(topic: string): boolean
}

const CACHE_ENTRIES = 1024
const CACHE_TOPIC_CHARS = 256

/** Compiles rules into an {@link Acl}; returns null when there are no rules (everything allowed). */
export function compileAcl(
  deviceRules: readonly AclRuleRecord[],
  tenantRules: readonly AclRuleRecord[],
): Acl | null {
  const rules = [...deviceRules, ...tenantRules]
  if (rules.length === 0) return null
  const publishRules = rules.filter((rule) => rule.action !== 'subscribe')
  const subscribeRules = rules.filter((rule) => rule.action !== 'publish')
  const publish = cached((topic) => decide(publishRules, topic))
  const deliver = cached((topic) => decide(subscribeRules, topic))
  return { publish, deliver, subscribe: (filter) => decide(subscribeRules, filter) }
}

function decide(rules: readonly AclRuleRecord[], subject: string): boolean {
  for (const rule of rules) {
    if (filterCovers(rule.filter, subject)) return rule.permission === 'allow'
  }
  return true
}

// Publishes and deliveries repeat the same few topics; a bounded cache keeps the per-message cost
// to one Map lookup. At the bound the cache is cleared, which only costs recomputation.
function cached(compute: (topic: string) => boolean): (topic: string) => boolean {
  const cache = new Map<string, boolean>()
  return (topic) => {
    let allowed = cache.get(topic)
    if (allowed === undefined) {
      allowed = compute(topic)
      // Long topics are not cached, so the cache is bounded in bytes as well as entries.
      if (topic.length <= CACHE_TOPIC_CHARS) {
        if (cache.size >= CACHE_ENTRIES) cache.clear()
        cache.set(topic, allowed)
      }
    }
    return allowed
  }
}

/** Whether `filter` is a well-formed MQTT topic filter (MQTT 3.1.1 section 4.7.1). */
export function isValidFilter(filter: string): boolean {
  if (filter.length === 0 || filter.includes('\u0000')) return false
  const levels = filter.split('/')
  return levels.every((level, i) => {
    if (level.includes('#')) return level === '#' && i === levels.length - 1
    if (level.includes('+')) return level === '+'
    return true
  })
}
