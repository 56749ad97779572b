import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core'

/** Debian's Chromium: the browser tests never download one. */
export const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((path) => existsSync(path))

/** Where the browser tests save their screenshots (kept out of git). */
export const SCREENSHOT_DIR = join(import.meta.dirname, '../../test-results/screenshots')

/** Starts headless Chromium; throws with the fix when it is not installed. */
export async function launchChromium(): Promise<Browser> {
  if (CHROMIUM === undefined) {
    throw new Error("Cannot find Debian's chromium: run .ci/prepare as root (or apt-get install chromium)")
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // The test box may run as root, where Chromium's sandbox cannot start.
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  })
}

/** A page that records every console error, page error and failed request as a problem. */
export interface WatchedPage {
  page: Page
  context: BrowserContext
  /** Console errors and warnings, uncaught exceptions and CSP violations seen so far. */
  problems: string[]
  /** Saves a full-page screenshot named after the step. */
  screenshot(name: string): Promise<string>
  close(): Promise<void>
}

/** Opens a fresh context (its own cookies) with a page whose console problems are recorded. */
export async function watchedPage(browser: Browser, testName: string): Promise<WatchedPage> {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } })
  const page = await context.newPage()
  const problems: string[] = []
  page.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warning') {
      problems.push(`console ${message.type()}: ${message.text()}`)
    }
  })
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`))
  mkdirSync(SCREENSHOT_DIR, { recursive: true })
  const slug = testName.replace(/[^a-z0-9]+/gi, '-').toLowerCase()
  let shots = 0
  return {
    page,
    context,
    problems,
    async screenshot(name) {
      const file = join(SCREENSHOT_DIR, `${slug}-${String(++shots).padStart(2, '0')}-${name}.png`)
      await page.screenshot({ path: file, fullPage: true })
      return file
    },
    close: () => context.close(),
  }
}
