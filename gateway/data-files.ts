/** Name of the admin token file inside the data dir (mode 0600). */
export const ADMIN_TOKEN_FILE = 'admin-token'
/** Name of the file a running gateway writes its API URL to, for the CLI. */
export const API_URL_FILE = 'api-url'
/** Name of the SQLite store inside the data dir. */
export const STORE_FILE = 'taureau.db'
