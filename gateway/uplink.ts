import type { Logger } from 'pino'
import { Counter, Gauge, type Registry } from 'prom-client'
// The modules themselves, not sync/index.ts: the gateway's main thread must not load libsodium
// (about 6 MB), which only the uplink's worker needs.
import { decodeKey, loadIdentity } from '../sync/identity.ts'
import { createUplink, type Uplink, type UplinkRecord } from '../sync/uplink.ts'
import { UPLINK_CLOSING_REASON } from '../sync/uplink-protocol.ts'
import { encodeRecordContent, unsendable } from '../sync/uplink-record.ts'
import type { GatewayConfig } from './config.ts'
import { GATEWAY_ERROR_CODES, GatewayError } from './errors.ts'
import { type Outbox, OutboxSealError } from './outbox.ts'

/**
 * Starts the private uplink when the config names a cloud receiver: the outbox is its source, and
 * records leave the outbox once the cloud acknowledged them. Undefined when no cloud is set.
 */
export async function startUplink(options: {
  config: GatewayConfig
  dataDir: string
  outbox: Outbox
  registry: Registry
  logger: Logger
}): Promise<Uplink | undefined> {
  const { config, outbox, logger } = options
  const settings = config.uplink
  if (settings.cloud === null && settings.cloudKey === null) return undefined
  if (settings.cloud === null || settings.cloudKey === null) {
    throw new GatewayError(
      GATEWAY_ERROR_CODES.invalidConfig,
      `Cannot start the uplink as ${settings.cloud === null ? 'uplink.cloud (--cloud HOST:PORT)' : 'uplink.cloudKey (--cloud-key KEY)'} is not set; set both or neither`,
      { field: settings.cloud === null ? 'uplink.cloud' : 'uplink.cloudKey' },
    )
  }
  let cloudKey: Uint8Array
  try {
    cloudKey = decodeKey(settings.cloudKey, 'uplink.cloudKey')
  } catch (cause) {
    throw new GatewayError(GATEWAY_ERROR_CODES.invalidConfig, (cause as Error).message, {
      cause,
      field: 'uplink.cloudKey',
    })
  }
  const split = settings.cloud.lastIndexOf(':')
  const host = settings.cloud.slice(0, split).replace(/^\[|\]$/g, '')
  const port = Number(settings.cloud.slice(split + 1))
  const identity = await loadIdentity(options.dataDir)
  const unreadable = new Counter({
    name: 'taureau_uplink_unreadable_records_total',
    help: 'Outbox records removed instead of sent: they could not be opened (corrupt, or sealed with another key), or the cloud would refuse them (a stream name or size past its bounds)',
    registers: [options.registry],
  })
  // The tenant of each record handed to the uplink: the outbox removes records per tenant.
  const tenants = new Map<number, string>()
  let uplink: Uplink
  try {
    uplink = createUplink({
      source: {
        read(afterSeq, limit) {
          // A session reads from the start: tenants of records dropped from the outbox while in
          // flight (TTL, quota) are forgotten here.
          if (afterSeq === 0) tenants.clear()
          const records: UplinkRecord[] = []
          for (const row of outbox.listAll(afterSeq, limit)) {
            if (row instanceof OutboxSealError) {
              logger.error({ err: row }, 'an outbox record cannot be opened; it is removed instead of sent')
              outbox.remove(row.tenantId, { seqs: [row.seq] })
              unreadable.inc()
              continue
            }
            const content = {
              tenant: row.tenantId,
              function: row.function,
              stream: row.stream,
              createdAt: row.createdAt,
              record: row.record,
            }
            const body = encodeRecordContent(content)
            const why = unsendable(content, body)
            if (why !== undefined) {
              // Sent, it would close every session at this record and hold up all that follow.
              logger.error(
                { tenant: row.tenantId, function: row.function, seq: row.seq, why },
                'an outbox record cannot be sent to the cloud; it is removed',
              )
              outbox.remove(row.tenantId, { seqs: [row.seq] })
              unreadable.inc()
              continue
            }
            tenants.set(row.seq, row.tenantId)
            records.push({ seq: row.seq, body })
          }
          return records
        },
        delivered(seqs) {
          const byTenant = new Map<string, number[]>()
          for (const seq of seqs) {
            const tenant = tenants.get(seq)
            tenants.delete(seq)
            if (tenant === undefined) continue
            byTenant.set(tenant, [...(byTenant.get(tenant) ?? []), seq])
          }
          for (const [tenant, list] of byTenant) outbox.remove(tenant, { seqs: list })
        },
      },
      cloud: { host, port, publicKey: cloudKey },
      identity,
      cellBytes: settings.cellBytes,
      schedule: settings.shaper,
      rekeyMs: settings.rekeyMs,
      sessionMs: settings.sessionMs,
      windowBytes: settings.windowBytes,
      backoff: {
        minMs: settings.backoffMinMs,
        maxMs: Math.max(settings.backoffMinMs, settings.backoffMaxMs),
      },
      alarmCells: settings.alarmCells,
      onEvent(event) {
        if (event.type === 'connected') logger.info({ session: event.session }, 'uplink connected')
        else if (event.type === 'disconnected')
          // Closing with the gateway is no cause for a warning.
          logger[event.reason === UPLINK_CLOSING_REASON ? 'info' : 'warn'](
            { session: event.session, reason: event.reason },
            'uplink disconnected',
          )
        else if (event.type === 'alarm')
          logger.warn(
            { backlogCells: event.backlogCells },
            'uplink backlog over its alarm bound; the shaper rate is not raised',
          )
        else logger.error({ err: event.error }, 'uplink error')
      },
    })
  } catch (cause) {
    if (!(cause instanceof RangeError)) throw cause
    throw new GatewayError(GATEWAY_ERROR_CODES.invalidConfig, `Cannot start the uplink as ${cause.message}`, {
      cause,
      field: 'uplink.shaper',
    })
  }
  if (settings.shaper.mode === 'off')
    logger.warn('uplink shaper is off: the traffic shows when and how much data flows')
  registerUplinkMetrics(options.registry, uplink)
  return uplink
}

function registerUplinkMetrics(registry: Registry, uplink: Uplink): void {
  const gauge = (name: string, help: string, read: () => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read())
      },
    })
  gauge('taureau_uplink_connected', '1 while a session with the cloud receiver is open', () =>
    uplink.status().state === 'connected' ? 1 : 0,
  )
  gauge(
    'taureau_uplink_in_flight_records',
    'Records sent and not yet acknowledged by the cloud',
    () => uplink.status().inFlight,
  )
  gauge(
    'taureau_uplink_delivered_records',
    'Records the cloud acknowledged since the gateway started',
    () => uplink.status().delivered,
  )
  gauge(
    'taureau_uplink_backlog_cells',
    'Cells of records waiting in the shaper',
    () => uplink.status().wire.backlogCells,
  )
  gauge(
    'taureau_uplink_backlog_alarm',
    '1 when the backlog passed uplink.alarmCells (the rate is never raised on its own)',
    () => (uplink.status().alarm ? 1 : 0),
  )
  gauge('taureau_uplink_data_cells', 'Cells that carried records', () => uplink.status().wire.cellsData)
  gauge(
    'taureau_uplink_dummy_cells',
    'Cover cells sent when no record waited',
    () => uplink.status().wire.cellsDummy,
  )
  gauge('taureau_uplink_wire_bytes', 'Bytes of cells sent', () => uplink.status().wire.wireBytes)
  gauge(
    'taureau_uplink_record_bytes',
    'Bytes of records carried in cells',
    () => uplink.status().wire.recordBytes,
  )
}
