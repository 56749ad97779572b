/**
 * Tenant ids: lower-case letters, digits, `-` and `_`, starting with a letter or digit, at most
 * 63 characters. They become the first level of every mounted topic and client id, so they can
 * never hold `/`, MQTT wildcards or a leading `$`.
 */
export const TENANT_ID_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/

/**
 * Device ids: letters, digits, `.`, `-`, `_` and `:`, at most 128 characters. A device signs in
 * as `DEVICE@TENANT`, so `@` is excluded.
 */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/
