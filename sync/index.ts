// The private uplink and the cloud receiver: what the gateway and the CLI use of sync/.

export { CELL_SIZES, DEFAULT_CELL_BYTES } from './cell-codec.ts'
export type {
  CloudGateway,
  CloudRecord,
  CloudStore,
  IncomingRecord,
  RecordQuery,
} from './cloud-store.ts'
export { createPostgresCloudStore } from './cloud-store-postgres.ts'
export { createSqliteCloudStore } from './cloud-store-sqlite.ts'
export { createThreadedSqliteCloudStore } from './cloud-store-thread.ts'
export { SYNC_ERROR_CODES, SyncError, type SyncErrorCode } from './errors.ts'
export {
  createSecretFile,
  decodeKey,
  encodeKey,
  fileExists,
  IDENTITY_FILE,
  loadIdentity,
} from './identity.ts'
export type { KeyPair } from './noise-ik.ts'
export {
  createReceiver,
  DEFAULT_RECEIVER_SCHEDULE,
  type Receiver,
  type ReceiverEvent,
  type ReceiverOptions,
} from './receiver.ts'
export type { ShaperMode } from './shaper.ts'
export {
  createUplink,
  DEFAULT_SCHEDULE,
  type Uplink,
  type UplinkLogEvent,
  type UplinkOptions,
  type UplinkRecord,
  type UplinkSource,
  type UplinkStatus,
} from './uplink.ts'
export { UPLINK_CLOSING_REASON } from './uplink-protocol.ts'
export { encodeRecordContent, type UplinkRecordContent, unsendable } from './uplink-record.ts'
