// Rules of function state that the browser UI checks too: this module imports nothing.

/**
 * Bounds of function state, shared by the sandbox, the gateway's store and its API. Keys and
 * namespace paths count UTF-16 code units (JavaScript's `length`); values count the bytes of their
 * JSON text in UTF-8.
 */
export const STATE_LIMITS = {
  maxKeyChars: 256,
  maxValueBytes: 256 * 1024,
  maxNamespaceChars: 256,
  maxNamespaceLevels: 8,
  /** Most keys one `keys()` call, or one page of the API, returns. */
  maxListedKeys: 1000,
  /** Longest lease on a key or a namespace: ten years. */
  maxTtlMs: 10 * 365 * 24 * 3600 * 1000,
} as const

const NAMESPACE_LEVEL = /^[A-Za-z0-9._-]+$/

/**
 * Why `path` cannot name a shared namespace, or undefined: `/`-separated levels of letters,
 * digits, `.`, `_` and `-` (not `.` or `..`), at most 8 levels and 256 characters.
 */
export function namespacePathProblem(path: string): string | undefined {
  if (path.length === 0) return 'the path is empty'
  if (path.length > STATE_LIMITS.maxNamespaceChars) {
    return `the path is longer than ${STATE_LIMITS.maxNamespaceChars} characters`
  }
  const levels = path.split('/')
  if (levels.length > STATE_LIMITS.maxNamespaceLevels) {
    return `the path has more than ${STATE_LIMITS.maxNamespaceLevels} levels`
  }
  for (const level of levels) {
    if (!NAMESPACE_LEVEL.test(level)) return "each level is one or more letters, digits, '.', '_' or '-'"
    if (level === '.' || level === '..') return "'.' and '..' levels are refused"
  }
  return undefined
}
