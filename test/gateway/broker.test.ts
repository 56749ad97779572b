import { once } from 'node:events'
import { createConnection } from 'node:net'
import mqttPacket from 'mqtt-packet'
import { describe, expect, test } from 'vitest'
import {
  closed,
  collect,
  connackCode,
  connect,
  metricsText,
  startGateway,
  subscribeGranted,
  until,
} from '../helpers/gateway.ts'

describe('authentication', () => {
  test('a device signs in as DEVICE@TENANT with its secret', async () => {
    await using gw = await startGateway()
    const secrets = await gw.provision('acme', ['sensor-1'])
    const client = await connect(gw.mqttUrl, {
      username: 'sensor-1@acme',
      password: secrets['sensor-1'] as string,
    })
    expect(client.connected).toBe(true)
    await client.endAsync()
  })

  test('wrong or missing credentials get CONNACK "not authorized" (5)', async () => {
    await using gw = await startGateway()
    const secrets = await gw.provision('acme', ['sensor-1'])
    const secret = secrets['sensor-1'] as string
    expect(await connackCode(gw.mqttUrl, { username: 'sensor-1@acme', password: 'wrong' })).toBe(5)
    expect(await connackCode(gw.mqttUrl, { username: 'nobody@acme', password: secret })).toBe(5)
    expect(await connackCode(gw.mqttUrl, { username: 'sensor-1@other', password: secret })).toBe(5)
    expect(await connackCode(gw.mqttUrl, { username: 'sensor-1', password: secret })).toBe(5)
    expect(await connackCode(gw.mqttUrl, {})).toBe(5)
    const metrics = await metricsText(gw)
    expect(metrics).toMatch(/taureau_connect_refused_total\{tenant="acme",reason="bad_credentials"\} 2/)
    expect(metrics).toMatch(/taureau_connect_refused_total\{tenant="unknown",reason="bad_credentials"\} 3/)
  })

  test('the anonymous tenant takes clients without credentials only when configured', async () => {
    await using gw = await startGateway({ mqtt: { anonymousTenant: 'dev' } })
    const anon = await connect(gw.mqttUrl, { clientId: 'tool' })
    const received = collect(anon)
    await anon.subscribeAsync('x/#')
    await anon.publishAsync('x/1', 'hi', { qos: 1 })
    await until(() => received.length === 1, 'the anonymous echo')
    expect(received).toEqual([['x/1', 'hi']])
    const tenants = await gw.api('GET', '/tenants')
    expect(tenants.body.tenants.map((t: { id: string }) => t.id)).toEqual(['dev'])
    await anon.endAsync()
  })

  test('an empty client id with clean session false gets CONNACK "identifier rejected" (2), then the close', async () => {
    await using gw = await startGateway()
    const secrets = await gw.provision('acme', ['d'])
    // mqtt.js refuses to send this CONNECT [MQTT-3.1.3-8], so it goes as raw bytes: generated with
    // clean session on, then the flag (bit 1 of the flags byte, offset 9 here) is cleared.
    const connect = mqttPacket.generate({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 4,
      clean: true,
      clientId: '',
      keepalive: 0,
      username: 'd@acme',
      password: Buffer.from(secrets.d as string),
    })
    expect(connect[9]).toBe(0xc2)
    connect[9] = 0xc0
    const socket = createConnection(gw.addresses.mqttPort, '127.0.0.1')
    const chunks: Buffer[] = []
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.write(connect)
    await once(socket, 'close')
    expect(Buffer.concat(chunks)).toEqual(Buffer.from([0x20, 0x02, 0x00, 0x02]))
  })

  test('a removed device is disconnected and cannot sign in again', async () => {
    await using gw = await startGateway()
    const secrets = await gw.provision('acme', ['d'])
    const client = await connect(gw.mqttUrl, { username: 'd@acme', password: secrets.d as string })
    const gone = closed(client)
    expect((await gw.api('DELETE', '/tenants/acme/devices/d')).status).toBe(204)
    await gone
    expect(await connackCode(gw.mqttUrl, { username: 'd@acme', password: secrets.d as string })).toBe(5)
    client.end(true)
  })

  test('rotating a secret closes the old sessions and only the new secret works', async () => {
    await using gw = await startGateway()
    const secrets = await gw.provision('acme', ['d'])
    const client = await connect(gw.mqttUrl, { username: 'd@acme', password: secrets.d as string })
    const gone = closed(client)
    const rotated = await gw.api('POST', '/tenants/acme/devices/d/rotate')
    expect(rotated.status).toBe(200)
    await gone
    client.end(true)
    expect(await connackCode(gw.mqttUrl, { username: 'd@acme', password: secrets.d as string })).toBe(5)
    expect(await connackCode(gw.mqttUrl, { username: 'd@acme', password: rotated.body.secret })).toBe(0)
  })

  test('MQTT over WebSocket signs in and delivers like TCP', async () => {
    await using gw = await startGateway()
    const secrets = await gw.provision('acme', ['ws', 'tcp'])
    const ws = await connect(gw.wsUrl, { username: 'ws@acme', password: secrets.ws as string })
    const tcp = await connect(gw.mqttUrl, { username: 'tcp@acme', password: secrets.tcp as string })
    const received = collect(ws)
    await ws.subscribeAsync('a/+')
    await tcp.publishAsync('a/b', 'over-ws', { qos: 1 })
    await until(() => received.length === 1, 'the WebSocket delivery')
    expect(received).toEqual([['a/b', 'over-ws']])
    await Promise.all([ws.endAsync(), tcp.endAsync()])
  })
})

describe('tenant isolation', () => {
  test('two tenants with the same device names, client ids and topics never see each other', async () => {
    await using gw = await startGateway()
    const a = await gw.provision('alpha', ['sensor', 'app'])
    const b = await gw.provision('beta', ['sensor', 'app'])
    const aApp = await connect(gw.mqttUrl, {
      username: 'app@alpha',
      password: a.app as string,
      clientId: 'app',
    })
    const bApp = await connect(gw.mqttUrl, {
      username: 'app@beta',
      password: b.app as string,
      clientId: 'app',
    })
    const aSensor = await connect(gw.mqttUrl, {
      username: 'sensor@alpha',
      password: a.sensor as string,
      clientId: 'c1',
    })
    // Same client id in another tenant: no takeover of alpha's 'c1'.
    const bSensor = await connect(gw.mqttUrl, {
      username: 'sensor@beta',
      password: b.sensor as string,
      clientId: 'c1',
    })
    const aGot = collect(aApp)
    const bGot = collect(bApp)
    await aApp.subscribeAsync('#', { qos: 1 })
    await bApp.subscribeAsync('#', { qos: 1 })
    await bSensor.publishAsync('sensors/temp', 'beta-21', { qos: 1 })
    await until(() => bGot.length === 1, "beta's own delivery")
    await aSensor.publishAsync('sensors/temp', 'alpha-20', { qos: 1 })
    await until(() => aGot.length === 1, "alpha's own delivery")
    expect(aGot).toEqual([['sensors/temp', 'alpha-20']])
    expect(bGot).toEqual([['sensors/temp', 'beta-21']])
    expect(aSensor.connected && bSensor.connected).toBe(true)
    await Promise.all([aApp, bApp, aSensor, bSensor].map((c) => c.endAsync()))
  })

  test('the same client id inside one tenant takes over the older connection', async () => {
    await using gw = await startGateway()
    const s = await gw.provision('alpha', ['d'])
    const first = await connect(gw.mqttUrl, {
      username: 'd@alpha',
      password: s.d as string,
      clientId: 'same',
    })
    const gone = closed(first)
    const second = await connect(gw.mqttUrl, {
      username: 'd@alpha',
      password: s.d as string,
      clientId: 'same',
    })
    await gone
    first.end(true)
    await second.endAsync()
  })

  test('retained messages are mounted: a tenant gets only its own, with its own topic names', async () => {
    await using gw = await startGateway()
    const a = await gw.provision('alpha', ['d'])
    const b = await gw.provision('beta', ['d'])
    const aPub = await connect(gw.mqttUrl, { username: 'd@alpha', password: a.d as string })
    const bPub = await connect(gw.mqttUrl, { username: 'd@beta', password: b.d as string })
    await aPub.publishAsync('state/door', 'alpha-open', { qos: 1, retain: true })
    await bPub.publishAsync('state/door', 'beta-closed', { qos: 1, retain: true })
    await Promise.all([aPub.endAsync(), bPub.endAsync()])
    const aSub = await connect(gw.mqttUrl, { username: 'd@alpha', password: a.d as string })
    const got = collect(aSub)
    await aSub.subscribeAsync('#', { qos: 1 })
    await until(() => got.length >= 1, 'the retained message')
    const marker = await connect(gw.mqttUrl, {
      username: 'd@alpha',
      password: a.d as string,
      clientId: 'marker',
    })
    await marker.publishAsync('marker', 'm', { qos: 1 })
    await until(() => got.some(([topic]) => topic === 'marker'), 'the marker')
    expect(got.filter(([topic]) => topic !== 'marker')).toEqual([['state/door', 'alpha-open']])
    await Promise.all([aSub.endAsync(), marker.endAsync()])
  })

  test('wills are mounted: published under the tenant, never seen by another tenant', async () => {
    await using gw = await startGateway()
    const a = await gw.provision('alpha', ['dying', 'watcher'])
    const b = await gw.provision('beta', ['watcher'])
    const aWatch = await connect(gw.mqttUrl, { username: 'watcher@alpha', password: a.watcher as string })
    const bWatch = await connect(gw.mqttUrl, { username: 'watcher@beta', password: b.watcher as string })
    const aGot = collect(aWatch)
    const bGot = collect(bWatch)
    await aWatch.subscribeAsync('#', { qos: 1 })
    await bWatch.subscribeAsync('#', { qos: 1 })
    const dying = await connect(gw.mqttUrl, {
      username: 'dying@alpha',
      password: a.dying as string,
      will: { topic: 'status/dying', payload: Buffer.from('gone'), qos: 1, retain: false },
    })
    ;(dying as unknown as { stream: { destroy(): void } }).stream.destroy() // no DISCONNECT: the will fires
    await until(() => aGot.length === 1, 'the will')
    expect(aGot).toEqual([['status/dying', 'gone']])
    const bPub = await connect(gw.mqttUrl, {
      username: 'watcher@beta',
      password: b.watcher as string,
      clientId: 'm',
    })
    await bPub.publishAsync('marker', 'm', { qos: 1 })
    await until(() => bGot.length === 1, "beta's marker")
    expect(bGot).toEqual([['marker', 'm']])
    dying.end(true)
    await Promise.all([aWatch.endAsync(), bWatch.endAsync(), bPub.endAsync()])
  })

  test('$-topics are reserved: publishes are dropped, subscriptions refused with 0x80', async () => {
    await using gw = await startGateway()
    const s = await gw.provision('alpha', ['d'])
    const client = await connect(gw.mqttUrl, { username: 'd@alpha', password: s.d as string })
    const got = collect(client)
    expect(await subscribeGranted(client, { '$SYS/#': { qos: 0 }, '#': { qos: 1 } })).toEqual([128, 1])
    await client.publishAsync('$SYS/fake', 'x', { qos: 1 })
    await client.publishAsync('ok', 'y', { qos: 1 })
    await until(() => got.length === 1, 'the allowed message')
    expect(got).toEqual([['ok', 'y']])
    const metrics = await metricsText(gw)
    expect(metrics).toMatch(/taureau_messages_dropped_total\{tenant="alpha",reason="reserved_topic"\} 1/)
    await client.endAsync()
  })

  test('UNSUBSCRIBE removes the mounted subscription', async () => {
    await using gw = await startGateway()
    const s = await gw.provision('alpha', ['d'])
    const client = await connect(gw.mqttUrl, { username: 'd@alpha', password: s.d as string })
    const got = collect(client)
    await client.subscribeAsync('a/#', { qos: 1 })
    await client.subscribeAsync('marker', { qos: 1 })
    await client.unsubscribeAsync('a/#')
    await client.publishAsync('a/1', 'after-unsub', { qos: 1 })
    await client.publishAsync('marker', 'm', { qos: 1 })
    await until(() => got.length >= 1, 'the marker')
    expect(got).toEqual([['marker', 'm']])
    await client.endAsync()
  })
})

describe('ACL rules', () => {
  test('a denied publish is dropped and counted; the connection stays open', async () => {
    await using gw = await startGateway()
    const s = await gw.provision('alpha', ['sensor', 'app'])
    const rules = [{ action: 'publish', filter: 'config/#', permission: 'deny' }]
    expect((await gw.api('PUT', '/tenants/alpha/devices/sensor/acl', { rules })).status).toBe(200)
    const app = await connect(gw.mqttUrl, { username: 'app@alpha', password: s.app as string })
    const sensor = await connect(gw.mqttUrl, { username: 'sensor@alpha', password: s.sensor as string })
    const got = collect(app)
    await app.subscribeAsync('#', { qos: 1 })
    await sensor.publishAsync('config/rate', 'evil', { qos: 1 })
    await sensor.publishAsync('data/1', 'fine', { qos: 1 })
    await until(() => got.length === 1, 'the allowed message')
    expect(got).toEqual([['data/1', 'fine']])
    expect(sensor.connected).toBe(true)
    const metrics = await metricsText(gw)
    expect(metrics).toMatch(/taureau_messages_dropped_total\{tenant="alpha",reason="acl"\} 1/)
    await Promise.all([app.endAsync(), sensor.endAsync()])
  })

  test('a denied subscription gets 0x80 and a wider one does not receive denied topics', async () => {
    await using gw = await startGateway()
    const s = await gw.provision('alpha', ['app', 'pub'])
    const tenantRules = [
      { action: 'subscribe', filter: 'secret/#', permission: 'deny' },
      { action: 'all', filter: 'private', permission: 'deny' },
    ]
    expect((await gw.api('PUT', '/tenants/alpha/acl', { rules: tenantRules })).status).toBe(200)
    const app = await connect(gw.mqttUrl, { username: 'app@alpha', password: s.app as string })
    const pub = await connect(gw.mqttUrl, { username: 'pub@alpha', password: s.pub as string })
    const granted = await subscribeGranted(app, {
      'secret/x': { qos: 1 },
      private: { qos: 1 },
      '#': { qos: 1 },
    })
    expect(granted).toEqual([128, 128, 1])
    const got = collect(app)
    await pub.publishAsync('secret/x', 'hidden', { qos: 1 })
    await pub.publishAsync('open', 'seen', { qos: 1 })
    await until(() => got.length === 1, 'the open message')
    expect(got).toEqual([['open', 'seen']])
    await Promise.all([app.endAsync(), pub.endAsync()])
  })

  test('device rules come before tenant rules', async () => {
    await using gw = await startGateway()
    const s = await gw.provision('alpha', ['admin', 'other'])
    await gw.api('PUT', '/tenants/alpha/acl', {
      rules: [{ action: 'subscribe', filter: 'ops/#', permission: 'deny' }],
    })
    await gw.api('PUT', '/tenants/alpha/devices/admin/acl', {
      rules: [{ action: 'subscribe', filter: 'ops/#', permission: 'allow' }],
    })
    const admin = await connect(gw.mqttUrl, { username: 'admin@alpha', password: s.admin as string })
    const other = await connect(gw.mqttUrl, { username: 'other@alpha', password: s.other as string })
    expect(await subscribeGranted(admin, { 'ops/#': { qos: 0 } })).toEqual([0])
    expect(await subscribeGranted(other, { 'ops/#': { qos: 0 } })).toEqual([128])
    await Promise.all([admin.endAsync(), other.endAsync()])
  })

  test('a will on a denied topic refuses the CONNECT', async () => {
    await using gw = await startGateway()
    const s = await gw.provision('alpha', ['d'])
    await gw.api('PUT', '/tenants/alpha/acl', {
      rules: [{ action: 'publish', filter: 'alarms/#', permission: 'deny' }],
    })
    const code = await connackCode(gw.mqttUrl, {
      username: 'd@alpha',
      password: s.d as string,
      will: { topic: 'alarms/fake', payload: Buffer.from('x'), qos: 0, retain: false },
    })
    expect(code).toBe(5)
  })
})

describe('quotas', () => {
  test('connections over the quota get CONNACK "server unavailable" (3)', async () => {
    await using gw = await startGateway()
    const s = await gw.provision('alpha', ['d'], { maxConnections: 1 })
    const first = await connect(gw.mqttUrl, { username: 'd@alpha', password: s.d as string, clientId: 'one' })
    expect(
      await connackCode(gw.mqttUrl, { username: 'd@alpha', password: s.d as string, clientId: 'two' }),
    ).toBe(3)
    await first.endAsync()
    await until(() => gw.broker.connections('alpha') === 0, 'the first connection to close')
    expect(
      await connackCode(gw.mqttUrl, { username: 'd@alpha', password: s.d as string, clientId: 'three' }),
    ).toBe(0)
  })

  test('an oversized payload is refused: dropped at QoS 0, connection closed unacknowledged at QoS 1', async () => {
    await using gw = await startGateway()
    const s = await gw.provision('alpha', ['d', 'app'], { maxPayloadBytes: 16 })
    const app = await connect(gw.mqttUrl, { username: 'app@alpha', password: s.app as string })
    const got = collect(app)
    await app.subscribeAsync('#', { qos: 1 })
    const device = await connect(gw.mqttUrl, { username: 'd@alpha', password: s.d as string })
    await device.publishAsync('big', 'x'.repeat(17), { qos: 0 })
    await device.publishAsync('small', 'ok', { qos: 1 })
    await until(() => got.length === 1, 'the small message')
    expect(got).toEqual([['small', 'ok']])
    const gone = closed(device)
    device.publish('big', 'y'.repeat(100), { qos: 1 })
    await gone
    device.end(true)
    const metrics = await metricsText(gw)
    expect(metrics).toMatch(/taureau_messages_dropped_total\{tenant="alpha",reason="payload_size"\} 2/)
    await app.endAsync()
  })

  test('QoS 0 publishes over the message rate are dropped and counted', async () => {
    await using gw = await startGateway()
    const s = await gw.provision('alpha', ['d'], { maxMessagesPerSec: 1, burstMessages: 5 })
    const device = await connect(gw.mqttUrl, { username: 'd@alpha', password: s.d as string })
    const got = collect(device)
    await device.subscribeAsync('#', { qos: 0 })
    for (let i = 0; i < 50; i++) device.publish('burst', String(i), { qos: 0 })
    await until(
      () => gw.metrics.tenant('alpha').drops.rate + gw.metrics.tenant('alpha').messagesIn === 50,
      'all 50',
    )
    const counters = gw.metrics.tenant('alpha')
    expect(counters.messagesIn).toBeGreaterThanOrEqual(5)
    expect(counters.messagesIn).toBeLessThan(10)
    expect(counters.drops.rate).toBe(50 - counters.messagesIn)
    await until(() => got.length === counters.messagesIn, 'the accepted messages')
    await device.endAsync()
  })

  test('QoS 1 publishes over the rate wait for a token rather than being dropped', async () => {
    await using gw = await startGateway()
    const s = await gw.provision('alpha', ['d'], { maxMessagesPerSec: 200, burstMessages: 1 })
    const device = await connect(gw.mqttUrl, { username: 'd@alpha', password: s.d as string })
    const got = collect(device)
    await device.subscribeAsync('#', { qos: 1 })
    await Promise.all(
      Array.from({ length: 20 }, (_, i) => device.publishAsync('slow', String(i), { qos: 1 })),
    )
    await until(() => got.length === 20, 'all 20 messages')
    expect(gw.metrics.tenant('alpha').drops.rate).toBe(0)
    await device.endAsync()
  })

  test('retained messages past the quota are delivered but not kept; replacing a kept one still works', async () => {
    await using gw = await startGateway()
    const s = await gw.provision('alpha', ['d'], { maxRetainedMessages: 2 })
    const device = await connect(gw.mqttUrl, { username: 'd@alpha', password: s.d as string })
    const live = collect(device)
    await device.subscribeAsync('#', { qos: 1 })
    for (const topic of ['r/1', 'r/2', 'r/3'])
      await device.publishAsync(topic, 'v1', { qos: 1, retain: true })
    await device.publishAsync('r/1', 'v2', { qos: 1, retain: true })
    await until(() => live.length === 4, 'the live deliveries')
    expect(gw.metrics.tenant('alpha').drops.retained_quota).toBe(1)
    const later = await connect(gw.mqttUrl, {
      username: 'd@alpha',
      password: s.d as string,
      clientId: 'later',
    })
    const kept = collect(later)
    await later.subscribeAsync('r/+', { qos: 1 })
    await later.publishAsync('marker', 'm', { qos: 1 })
    await until(() => kept.length >= 2, 'the retained messages')
    expect(kept.sort()).toEqual([
      ['r/1', 'v2'],
      ['r/2', 'v1'],
    ])
    await Promise.all([device.endAsync(), later.endAsync()])
  })

  test('new persistent sessions past the quota get CONNACK 3; existing ones resume', async () => {
    await using gw = await startGateway()
    const s = await gw.provision('alpha', ['d'], { maxPersistentSessions: 1 })
    const options = { username: 'd@alpha', password: s.d as string, clean: false }
    const first = await connect(gw.mqttUrl, { ...options, clientId: 'one' })
    await first.subscribeAsync('x', { qos: 1 })
    await first.endAsync()
    expect(await connackCode(gw.mqttUrl, { ...options, clientId: 'two' })).toBe(3)
    expect(await connackCode(gw.mqttUrl, { ...options, clientId: 'one' })).toBe(0)
    expect(
      await connackCode(gw.mqttUrl, { username: 'd@alpha', password: s.d as string, clientId: 'clean' }),
    ).toBe(0)
  })
})
