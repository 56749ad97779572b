// The device simulator's public API: fleets of simulated sensor devices that speak only MQTT to
// the gateway, and their provisioning through its HTTP API. Other folders import from here only.
export { type DeviceCredentials, parseDeviceCredentials } from './credentials.ts'
export { SIM_ERROR_CODES, SimError, type SimErrorCode } from './errors.ts'
export { type Fleet, type FleetOptions, type FleetStats, type FleetSummary, startFleet } from './fleet.ts'
export { deviceIds, type ProvisionOptions, provisionDevices } from './provision.ts'
export {
  BINARY_READING_VERSION,
  decodeReading,
  encodeReading,
  encodeReadingJson,
  type Reading,
} from './reading-codec.ts'
export {
  createSensorModel,
  type ReadingFieldsByKind,
  SENSOR_KINDS,
  type SensorKind,
  type SensorModel,
  type SensorModelOptions,
  type SensorSample,
} from './sensor-models.ts'
