/**
 * Whether `filter` covers `subject`, where `subject` is a topic name or itself a topic filter
 * (MQTT 3.1.1 section 4.7). For a topic name this is ordinary matching: `+` matches one level,
 * a trailing `#` matches that level's parent and everything below it. For a filter, a wildcard
 * in `subject` is covered only by a wildcard at least as wide (`+` by `+` or `#`, `#` by `#`),
 * so the answer is "every topic `subject` can match is matched by `filter`".
 */
export function filterCovers(filter: string, subject: string): boolean {
  let f = 0
  let s = 0
  const fLen = filter.length
  const sLen = subject.length
  for (;;) {
    const fEnd = indexOrEnd(filter, f)
    const level = filter.slice(f, fEnd)
    if (level === '#') return true
    if (s > sLen) return false
    const sEnd = indexOrEnd(subject, s)
    const subjectLevel = subject.slice(s, sEnd)
    if (level === '+') {
      if (subjectLevel === '#') return false
    } else if (level !== subjectLevel) {
      return false
    }
    const fDone = fEnd >= fLen
    const sDone = sEnd >= sLen
    if (fDone && sDone) return true
    if (fDone) return false
    f = fEnd + 1
    if (sDone) {
      // `a/#` also matches `a` [MQTT-4.7.1-2]: the subject ended, only a final `#` may remain.
      return filter.slice(f) === '#'
    }
    s = sEnd + 1
  }
}

/**
 * Whether two filters can match a common topic name; used to tell a subscriber whose filter is
 * wider than a deny rule that some deliveries will be held back.
 */
export function filtersOverlap(a: string, b: string): boolean {
  const al = a.split('/')
  const bl = b.split('/')
  for (let i = 0; ; i++) {
    const x = al[i]
    const y = bl[i]
    if (x === '#' || y === '#') return true
    if (x === undefined || y === undefined) return x === y
    if (x !== '+' && y !== '+' && x !== y) return false
  }
}

function indexOrEnd(text: string, from: number): number {
  const at = text.indexOf('/', from)
  return at === -1 ? text.length : at
}
