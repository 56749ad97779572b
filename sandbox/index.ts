// The sandbox's public API: tenant sandboxes on QuickJS WebAssembly. The gateway imports only this.
export { SANDBOX_ERROR_CODES, SandboxError, type SandboxErrorCode } from './errors.ts'
export {
  type CallOutcome,
  type CompileOptions,
  createStateOverlay,
  createTenantSandbox,
  type GuestEmit,
  type GuestPublish,
  type HandlerName,
  type InvocationCall,
  type InvocationInfo,
  type InvocationResult,
  STATE_LIMITS,
  type StateLease,
  type StateOverlay,
  type StateSource,
  type StateWrite,
  stateKeyProblem,
  stateNamespaceProblem,
  statePrefixEnd,
  stateTtlProblem,
  type TenantSandbox,
  type TenantSandboxOptions,
} from './tenant-sandbox.ts'
export {
  createWorkerPool,
  type IsolationOptions,
  type TenantPlacement,
  type WorkerPool,
  type WorkerPoolOptions,
} from './worker-pool.ts'
