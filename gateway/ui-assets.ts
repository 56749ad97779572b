import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { extname, join, relative, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gunzipSync } from 'node:zlib'
import type { Context, Hono } from 'hono'
import type { Env } from './api.ts'

/** Where `npm run build:ui` puts the UI. */
export const DEFAULT_UI_DIR = fileURLToPath(new URL('../ui/dist/', import.meta.url))

const TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
}

interface Asset {
  type: string
  /** Only for files the build did not compress: the others are decompressed for the rare client that takes neither encoding. */
  raw: Uint8Array<ArrayBuffer> | undefined
  gzip: Uint8Array<ArrayBuffer> | undefined
  brotli: Uint8Array<ArrayBuffer> | undefined
  /** Vite names these by content hash: they never change under one name. */
  immutable: boolean
}

/**
 * The UI's Content-Security-Policy: only this origin's scripts, styles and connections, no eval,
 * no inline script or style markup, no framing.
 */
export const UI_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'self'",
  "frame-ancestors 'none'",
  "form-action 'self'",
].join('; ')

/** Headers every response of the gateway's HTTP server carries. */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': UI_CSP,
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'permissions-policy': 'camera=(), microphone=(), geolocation=(), usb=(), serial=()',
}

/**
 * Serves the built UI from memory: every file of `dir` is read once, with the `.br` and `.gz`
 * copies the build made, and each request gets the smallest encoding it accepts (a file with a
 * `.gz` copy is held compressed only). Only files that
 * exist at start are served, so no request path ever reaches the file system. Without a build,
 * `/` says how to make one.
 */
export function mountUi(app: Hono<Env>, dir: string, basePath: string): void {
  const assets = loadAssets(dir)
  const serve = (c: Context<Env>, path: string) => {
    const asset = assets.get(path)
    if (asset === undefined) return undefined
    const accepted = c.req.header('accept-encoding') ?? ''
    const [body, encoding] =
      asset.brotli !== undefined && /\bbr\b/.test(accepted)
        ? [asset.brotli, 'br']
        : asset.gzip !== undefined && /\bgzip\b/.test(accepted)
          ? [asset.gzip, 'gzip']
          : [asset.raw ?? new Uint8Array(gunzipSync(asset.gzip as Uint8Array)), undefined]
    c.header('content-type', asset.type)
    c.header('cache-control', asset.immutable ? 'public, max-age=31536000, immutable' : 'no-cache')
    c.header('vary', 'accept-encoding')
    if (encoding !== undefined) c.header('content-encoding', encoding)
    return c.body(body, 200)
  }

  const index = (c: Context<Env>) => {
    const served = serve(c, 'index.html')
    if (served !== undefined) return served
    return c.html(
      '<!doctype html><meta charset="utf-8"><title>Taureau</title><h1>The web UI is not built</h1>' +
        '<p>Run <code>npm run build:ui</code> (or <code>npm ci</code>, which builds it) and reload. ' +
        'The API is at <code>api/v1</code>; its description at <a href="api/openapi.json">api/openapi.json</a>.</p>',
      503,
    )
  }
  // Under a prefix, `/prefix` becomes `/prefix/` so that the page's relative URLs resolve inside it.
  app.get('/', (c) => (c.req.path.endsWith('/') ? index(c) : c.redirect(`${c.req.path}/`, 308)))
  app.get('/*', (c, next) => {
    const path = c.req.path.slice(basePath.length + 1)
    if (path === '') return index(c)
    const served = assets.has(path) && path !== 'budget.json' ? serve(c, path) : undefined
    return served ?? next()
  })
}

function loadAssets(dir: string): Map<string, Asset> {
  const assets = new Map<string, Asset>()
  if (!existsSync(dir)) return assets
  const walk = (at: string): void => {
    for (const entry of readdirSync(at)) {
      const file = join(at, entry)
      if (statSync(file).isDirectory()) walk(file)
      else if (!entry.endsWith('.gz') && !entry.endsWith('.br')) {
        const path = relative(dir, file).split(sep).join('/')
        const read = (suffix: string) => (existsSync(file + suffix) ? bytes(file + suffix) : undefined)
        const gzip = read('.gz')
        assets.set(path, {
          type: TYPES[extname(entry)] ?? 'application/octet-stream',
          raw: gzip === undefined ? bytes(file) : undefined,
          gzip,
          brotli: read('.br'),
          immutable: path.startsWith('assets/'),
        })
      }
    }
  }
  walk(dir)
  return assets
}

/** A file's bytes in an ArrayBuffer of their own (a response body cannot be a pooled Buffer's view). */
function bytes(file: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array(readFileSync(file))
}
