import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vite'

const uiDir = fileURLToPath(new URL('.', import.meta.url))
/** The gateway the dev server sends `/api` to: `TAUREAU_UI_API` or the default HTTP port. */
const apiTarget = process.env.TAUREAU_UI_API ?? 'http://127.0.0.1:8080'

/**
 * The UI's Vite config: relative asset URLs (the gateway may serve the UI under a path prefix),
 * JSX through esbuild for Preact, and in development the API proxied to a local gateway.
 */
export default defineConfig({
  root: uiDir,
  base: './',
  publicDir: false,
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    outDir: fileURLToPath(new URL('./dist', import.meta.url)),
    emptyOutDir: true,
    target: 'es2022',
    // Vite's preload helper would otherwise inject an inline module-preload polyfill script.
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
    chunkSizeWarningLimit: 1024,
    rollupOptions: {
      onwarn(warning, warn) {
        // Zod's sources place some `@__PURE__` notes where Rollup cannot use them; harmless.
        if (warning.code === 'INVALID_ANNOTATION' && warning.id?.includes('node_modules') === true) return
        warn(warning)
      },
    },
  },
  server: {
    proxy: {
      '/api': { target: apiTarget, changeOrigin: false },
    },
  },
})
