import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** Makes a temp dir that the caller removes. */
export function tempDir(prefix = 'taureau-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix))
}
