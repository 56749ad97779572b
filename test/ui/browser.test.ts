import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { promisify } from 'node:util'
import mqtt from 'mqtt'
import type { Browser, Page } from 'playwright-core'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { UI_BUDGET_BYTES } from '../../ui/index.ts'
import { launchChromium, type WatchedPage, watchedPage } from '../helpers/browser.ts'
import { startGateway, type TestGateway } from '../helpers/gateway.ts'

const sh = promisify(execFile)

// One build and one browser for the file; each test has its own gateway and browser context.
let browser: Browser
let totalGzipBytes = 0
beforeAll(async () => {
  // Built as `npm ci` builds it: a production build, whatever NODE_ENV the test runner set.
  const { NODE_ENV: _, ...env } = process.env
  await sh('npm', ['run', 'build:ui'], { env, cwd: new URL('../..', import.meta.url).pathname })
  const budget = JSON.parse(readFileSync(new URL('../../ui/dist/budget.json', import.meta.url), 'utf8'))
  totalGzipBytes = budget.totalGzipBytes
  browser = await launchChromium()
}, 180_000)
afterAll(async () => {
  await browser?.close()
})

let open: WatchedPage | undefined
let gateway: (TestGateway & AsyncDisposable) | undefined
afterEach(async (context) => {
  // Every test ends with a screenshot, and fails on any console error or warning it saw. The page
  // closes before its gateway, whose end would cut the page's live streams.
  const page = open
  open = undefined
  if (page !== undefined) {
    await page.screenshot(context.task.result?.state === 'fail' ? 'failed' : 'end')
    await page.close()
  }
  await gateway?.[Symbol.asyncDispose]()
  gateway = undefined
  expect(page?.problems ?? []).toEqual([])
})

async function gatewayForTest(): Promise<TestGateway> {
  gateway = await startGateway()
  return gateway
}

async function openPage(name: string): Promise<WatchedPage> {
  open = await watchedPage(browser, name)
  return open
}

async function signInWithToken(page: Page, gw: TestGateway, token = gw.adminToken): Promise<void> {
  await page.goto(`${gw.addresses.httpUrl}/`)
  await page.getByRole('tab', { name: 'API token' }).click()
  await page.getByLabel('API token').fill(token)
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.getByRole('link', { name: 'Overview' }).first().waitFor()
}

/** Replaces the code editor's text, as typing a whole new source would. */
async function setSource(page: Page, source: string): Promise<void> {
  const editor = page.getByRole('textbox', { name: 'Source' })
  await editor.click()
  await page.keyboard.press('Control+A')
  await page.keyboard.press('Delete')
  await page.keyboard.insertText(source)
}

const V1 = `export default {
  onMessage(msg, ctx) {
    ctx.log('got ' + msg.payload.c)
    return { f: msg.payload.c * 1.8 + 32 }
  },
}
`
const BROKEN = V1.replace('* 1.8 + 32', '* 1.8 +')
const V2 = V1.replace('ctx.log(', "ctx.log('v2 ' + ").replace('* 1.8 + 32', '* 2')

describe('the web UI in Chromium', () => {
  test('the bundle stays within its budget', () => {
    expect(totalGzipBytes).toBeGreaterThan(0)
    expect(totalGzipBytes).toBeLessThanOrEqual(UI_BUDGET_BYTES)
  })

  test('an administrator signs in, adds a tenant and a device, writes, deploys, watches and rolls back a function', async () => {
    const gw = await gatewayForTest()
    const { page, screenshot } = await openPage('admin flow')
    await signInWithToken(page, gw)
    const invocations = page.getByTestId('chart-invocations')
    await invocations.waitFor()
    expect(Number(await invocations.getAttribute('data-total'))).toBe(0)
    await screenshot('overview')

    // A tenant and a device; the secret shows once with a command that works as printed.
    await page.goto(`${gw.addresses.httpUrl}/#/tenants`)
    await page.getByLabel('Tenant id').fill('acme')
    await page.getByRole('button', { name: 'Create tenant' }).click()
    await page.getByRole('link', { name: 'acme', exact: true }).first().click()
    await page.getByLabel('Device id').fill('sensor-1')
    await page.getByRole('button', { name: 'Add device' }).click()
    const secret = (await page.getByTestId('device-secret').textContent())?.trim() ?? ''
    expect(secret).toMatch(/^\S{32}$/)
    const command = (await page.getByTestId('mosquitto-command').textContent())?.trim() ?? ''
    expect(command).toContain(`-p ${gw.addresses.mqttPort} -u sensor-1@acme`)
    await screenshot('device-added')
    await sh('sh', ['-c', command])
    await page.getByRole('button', { name: 'Done' }).click()

    // The editor: a compile error with its line and column, fixed, then deployed.
    await page.goto(`${gw.addresses.httpUrl}/#/tenants/acme/functions/new`)
    await page.getByLabel('Function name').fill('fahrenheit')
    await page.getByLabel('Trigger 1 topic filter').fill('sensors/#')
    await page.getByLabel('Output topic').fill('out/fahrenheit')
    await setSource(page, BROKEN)
    const compileError = page.getByTestId('compile-error')
    await expect.poll(() => compileError.textContent(), { timeout: 10_000 }).toMatch(/Line 4, column \d+/)
    await screenshot('compile-error')
    await setSource(page, V1)
    await compileError.waitFor({ state: 'detached', timeout: 10_000 })
    await page.getByRole('button', { name: 'Deploy' }).click()
    await page.getByText('Deployed version v1 of fahrenheit.').waitFor()
    await page.waitForURL(/#\/tenants\/acme\/functions\/fahrenheit$/)
    await setSource(page, V2)
    await page.getByRole('button', { name: 'Deploy' }).click()
    await page.getByText('Deployed version v2 of fahrenheit.').waitFor()

    // A device's message shows in the live logs, and its output comes back to the device.
    const device = await mqtt.connectAsync(gw.mqttUrl, {
      username: 'sensor-1@acme',
      password: secret,
      reconnectPeriod: 0,
    })
    try {
      const outputs: string[] = []
      device.on('message', (_topic, payload) => outputs.push(payload.toString()))
      await device.subscribeAsync('out/#', { qos: 1 })
      await device.publishAsync('sensors/temp', '{"c":21.5}', { qos: 1 })
      await page.getByTestId('live-logs').getByText('v2 got 21.5').waitFor()
      await expect.poll(() => outputs).toContain('{"f":43}')
      await screenshot('live-logs')

      // The overview's invocations chart moves.
      await page.goto(`${gw.addresses.httpUrl}/#/`)
      await expect
        .poll(async () => Number(await page.getByTestId('chart-invocations').getAttribute('data-total')), {
          timeout: 15_000,
        })
        .toBeGreaterThan(0)
      await screenshot('chart-moved')

      // Versions: the diff against v1, then one click back to it.
      await page.goto(`${gw.addresses.httpUrl}/#/tenants/acme/functions/fahrenheit`)
      const diff = page.getByTestId('version-diff')
      await expect.poll(() => diff.textContent()).toContain("ctx.log('v2 ' + ")
      await page.getByRole('button', { name: 'Roll back to v1' }).click()
      await expect
        .poll(async () => (await gw.api('GET', '/tenants/acme/functions/fahrenheit')).body.function.version)
        .toBe(1)
      await device.publishAsync('sensors/temp', '{"c":100}', { qos: 1 })
      await expect.poll(() => outputs).toContain('{"f":212}')
      await screenshot('rolled-back')
    } finally {
      await device.endAsync()
    }
  }, 120_000)

  test('a tenant user signs in with a password and sees only their tenant', async () => {
    const gw = await gatewayForTest()
    await gw.provision('acme', ['a-1'])
    await gw.provision('other', ['secret-device'])
    expect(
      (await gw.api('POST', '/users', { name: 'ann', password: 'correct horse', tenant: 'acme' })).status,
    ).toBe(201)
    const { page, context, screenshot } = await openPage('tenant user')
    await page.goto(`${gw.addresses.httpUrl}/`)
    await page.getByRole('tab', { name: 'User and password' }).click()
    await page.getByLabel('User name').fill('ann')
    await page.getByLabel('Password').fill('correct horse')
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.getByRole('link', { name: 'Overview' }).first().waitFor()

    await page.goto(`${gw.addresses.httpUrl}/#/tenants/acme/devices`)
    await page.getByText('a-1@acme').first().waitFor()
    // Another tenant's pages send the user back to their own; nothing of it is ever shown.
    await page.goto(`${gw.addresses.httpUrl}/#/tenants/other/devices`)
    await page.waitForURL(/#\/tenants\/acme/)
    await page.getByText('a-1@acme').first().waitFor()
    expect(await page.content()).not.toContain('secret-device')
    await screenshot('own-tenant')
    // The API behind it refuses too, with the same session cookie.
    const base = `${gw.addresses.httpUrl}/api/v1`
    expect((await context.request.get(`${base}/tenants/other/devices`)).status()).toBe(403)
    const tenants = await (await context.request.get(`${base}/tenants`)).json()
    expect(tenants.tenants.map((t: { id: string }) => t.id)).toEqual(['acme'])
  }, 60_000)
})
