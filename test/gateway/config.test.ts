import { rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, test } from 'vitest'
import { loadConfig } from '../../gateway/config.ts'
import { GatewayError } from '../../gateway/errors.ts'
import { tempDir } from '../helpers/temp.ts'

const dirs: string[] = []
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

function configFile(text: string): string {
  const dir = tempDir()
  dirs.push(dir)
  const file = join(dir, 'taureau.yaml')
  writeFileSync(file, text)
  return file
}

function errorOf(run: () => unknown): GatewayError {
  try {
    run()
  } catch (error) {
    if (error instanceof GatewayError) return error
    throw error
  }
  throw new Error('expected a GatewayError')
}

describe('loadConfig()', () => {
  test('embedded defaults make a complete config', () => {
    const config = loadConfig({ env: {} })
    expect(config.mqtt.port).toBe(1883)
    expect(config.mqtt.wsPort).toBe(8083)
    expect(config.http.port).toBe(8080)
    expect(config.mqtt.anonymousTenant).toBeNull()
    expect(config.data).toBe('.taureau')
    expect(config.tenantDefaults.quotas.maxPayloadBytes).toBe(256 * 1024)
  })

  test('precedence is defaults < file < env < flag', () => {
    const file = configFile('mqtt:\n  port: 1000\n  wsPort: 1001\nhttp:\n  port: 1002\nhost: 10.0.0.1\n')
    const config = loadConfig({
      file,
      env: { TAUREAU_MQTT_PORT: '2000', TAUREAU_WS_PORT: '2001' },
      flags: { mqtt: { port: 3000 } },
    })
    expect(config.mqtt.port).toBe(3000)
    expect(config.mqtt.wsPort).toBe(2001)
    expect(config.http.port).toBe(1002)
    expect(config.host).toBe('10.0.0.1')
    expect(config.mqtt.queueLimit).toBe(42)
  })

  test('TAUREAU_CONFIG names the file when no flag does', () => {
    const file = configFile('mqtt:\n  anonymousTenant: dev\n')
    expect(loadConfig({ env: { TAUREAU_CONFIG: file } }).mqtt.anonymousTenant).toBe('dev')
  })

  test('a bad value names the key, the reason and where it came from', () => {
    const fromEnv = errorOf(() => loadConfig({ env: { TAUREAU_MQTT_PORT: 'abc' } }))
    expect(fromEnv.code).toBe('invalid_config')
    expect(fromEnv.message).toMatch(/'mqtt\.port' is invalid: .*\(from env\)/)
    const fromFlag = errorOf(() => loadConfig({ env: {}, flags: { http: { port: 70000 } } }))
    expect(fromFlag.message).toMatch(/'http\.port' is invalid: .*\(from flag\)/)
    const file = configFile('mqtt:\n  port: -1\n')
    expect(errorOf(() => loadConfig({ env: {}, file })).message).toMatch(
      /'mqtt\.port' is invalid: .*from file/,
    )
  })

  test('an unknown key in the file is refused, so typos do not pass silently', () => {
    const file = configFile('mqtt:\n  prot: 1884\n')
    const error = errorOf(() => loadConfig({ env: {}, file }))
    expect(error.message).toMatch(/'mqtt' is invalid: .*prot/)
  })

  test('a file that is not YAML, not a mapping or missing is refused clearly', () => {
    expect(errorOf(() => loadConfig({ env: {}, file: configFile('mqtt: [1, 2') })).message).toMatch(
      /not valid YAML/,
    )
    expect(errorOf(() => loadConfig({ env: {}, file: configFile('- 1\n- 2\n') })).message).toMatch(/mapping/)
    expect(errorOf(() => loadConfig({ env: {}, file: '/nonexistent/taureau.yaml' })).message).toMatch(
      /cannot be read/,
    )
  })

  test('an anonymous tenant must be a valid tenant id', () => {
    expect(errorOf(() => loadConfig({ env: { TAUREAU_ANONYMOUS_TENANT: 'Bad/Name' } })).message).toMatch(
      /'mqtt\.anonymousTenant' is invalid/,
    )
  })
})
