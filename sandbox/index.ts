// The sandbox's public API: tenant sandboxes on QuickJS WebAssembly. The gateway imports only this.
export { SANDBOX_ERROR_CODES, SandboxError, type SandboxErrorCode } from './errors.ts'
export {
  createTenantSandbox,
  type GuestEmit,
  type GuestPublish,
  type HandlerName,
  type InvocationInfo,
  type InvocationResult,
  quickJSWasmModule,
  type TenantSandbox,
  type TenantSandboxOptions,
} from './tenant-sandbox.ts'
export { createWorkerPool, type WorkerPool, type WorkerPoolOptions } from './worker-pool.ts'
