import { readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join, relative, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { brotliCompress, constants, gzip } from 'node:zlib'
import { build } from 'vite'
import config from './vite.config.ts'

const gzipAsync = promisify(gzip)
const brotliAsync = promisify(brotliCompress)

/** Most bytes the UI may weigh gzipped, all its assets together: 250 KiB. */
export const UI_BUDGET_BYTES = 250 * 1024

/** One asset of the build with its sizes. */
export interface UiAsset {
  /** Path under `ui/dist`, with `/`. */
  file: string
  bytes: number
  gzipBytes: number
}

/** What {@link buildUi} made, as written to `ui/dist/budget.json`. */
export interface UiBuildReport {
  totalGzipBytes: number
  budgetBytes: number
  files: UiAsset[]
}

/** Options of {@link buildUi}. */
export interface BuildUiOptions {
  /** Print the size table (default true). */
  print?: boolean
}

/** Files served compressed: the gateway picks `.br` or `.gz` by the request's Accept-Encoding. */
const COMPRESSED = /\.(js|css|html|svg|json)$/

const OUT_DIR = fileURLToPath(new URL('./dist/', import.meta.url))

async function filesUnder(dir: string): Promise<string[]> {
  const found: string[] = []
  for (const entry of await readdir(dir)) {
    const path = join(dir, entry)
    if ((await stat(path)).isDirectory()) found.push(...(await filesUnder(path)))
    else found.push(path)
  }
  return found
}

function kib(bytes: number): string {
  return `${(bytes / 1024).toFixed(1)} KiB`
}

/**
 * Builds the UI into `ui/dist` with Vite, writes a `.gz` (level 9) and a `.br` (quality 11) next
 * to every text asset, and `budget.json` with each asset's raw and gzipped size. The report's
 * total counts every compressed asset (scripts, styles, the page and its icon).
 */
export async function buildUi(options: BuildUiOptions = {}): Promise<UiBuildReport> {
  await build({ ...config, configFile: false, logLevel: options.print === false ? 'silent' : 'info' })
  const files: UiAsset[] = []
  for (const path of (await filesUnder(OUT_DIR)).sort()) {
    const file = relative(OUT_DIR, path).split(sep).join('/')
    if (!COMPRESSED.test(file) || file === 'budget.json') continue
    const raw = await readFile(path)
    const gzipped = await gzipAsync(raw, { level: 9 })
    const brotli = await brotliAsync(raw, {
      params: {
        [constants.BROTLI_PARAM_QUALITY]: 11,
        [constants.BROTLI_PARAM_MODE]: constants.BROTLI_MODE_TEXT,
        [constants.BROTLI_PARAM_SIZE_HINT]: raw.length,
      },
    })
    await writeFile(`${path}.gz`, gzipped)
    await writeFile(`${path}.br`, brotli)
    files.push({ file, bytes: raw.length, gzipBytes: gzipped.length })
  }
  const report: UiBuildReport = {
    totalGzipBytes: files.reduce((sum, asset) => sum + asset.gzipBytes, 0),
    budgetBytes: UI_BUDGET_BYTES,
    files,
  }
  await writeFile(join(OUT_DIR, 'budget.json'), `${JSON.stringify(report, null, 2)}\n`)
  if (options.print !== false) printReport(report)
  return report
}

function printReport(report: UiBuildReport): void {
  const width = Math.max(...report.files.map((asset) => asset.file.length), 'total'.length)
  const line = (name: string, raw: string, gzipped: string) =>
    `${name.padEnd(width)}  ${raw.padStart(11)}  ${gzipped.padStart(11)}`
  const rows = [
    line('file', 'raw', 'gzip'),
    ...report.files.map((asset) => line(asset.file, kib(asset.bytes), kib(asset.gzipBytes))),
    line('total', '', kib(report.totalGzipBytes)),
  ]
  const within = report.totalGzipBytes <= report.budgetBytes
  rows.push(
    `${within ? 'within' : 'OVER'} the budget of ${kib(report.budgetBytes)} gzip (${((report.totalGzipBytes / report.budgetBytes) * 100).toFixed(1)}%)`,
  )
  console.log(rows.join('\n'))
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  const report = await buildUi()
  if (report.totalGzipBytes > report.budgetBytes) {
    console.error(
      `Cannot ship the UI as it weighs ${report.totalGzipBytes} bytes gzipped, over its budget of ${report.budgetBytes}`,
    )
    process.exitCode = 1
  }
}
