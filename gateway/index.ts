// The gateway's public API: process composition, configuration and the pieces other folders and
// tests compose. Other folders import from here only.
export { type Acl, aclRuleSchema, aclRulesSchema, compileAcl, isValidFilter } from './acl.ts'
export { createApi, hashToken } from './api.ts'
export { ApiError, type ApiTarget, callApi, resolveApiTarget } from './api-client.ts'
export { createDeviceSchema, createTenantSchema } from './api-schemas.ts'
export { type Broker, type BrokerAddress, DROPPED_TOPIC } from './broker.ts'
export {
  CONFIG_ENV,
  configSchema,
  type GatewayConfig,
  type LoadConfigOptions,
  loadConfig,
  type Quotas,
  quotaOverridesSchema,
  quotasSchema,
} from './config.ts'
export { ADMIN_TOKEN_FILE, API_URL_FILE, STORE_FILE } from './data-files.ts'
export { GATEWAY_ERROR_CODES, GatewayError, type GatewayErrorCode } from './errors.ts'
export {
  createGateway,
  type Gateway,
  type GatewayAddresses,
  type GatewayOptions,
} from './gateway.ts'
export type { DropReason, Metrics, TenantCounters } from './metrics.ts'
export { DEVICE_ID_PATTERN, TENANT_ID_PATTERN } from './names.ts'
export { createStore, type Store } from './store.ts'
export { filterCovers, filtersOverlap } from './topic-filter.ts'
