import type { SandboxErrorCode } from './errors.ts'
import type { HandlerName, InvocationInfo, InvocationResult } from './tenant-sandbox.ts'

/** A request from the pool to one of its workers. */
export type WorkerRequest =
  | {
      type: 'compile'
      id: number
      tenantId: string
      memoryLimitBytes: number
      key: string
      source: string
      handlers: HandlerName[]
    }
  | { type: 'remove'; id: number; tenantId: string; memoryLimitBytes: number; key: string }
  | {
      type: 'invoke'
      id: number
      tenantId: string
      memoryLimitBytes: number
      key: string
      handler: HandlerName
      args: unknown[]
      info: InvocationInfo
      deadlineMs: number
    }

/** A worker's answer to one request. */
export type WorkerReply =
  | { id: number; ok: true; result: InvocationResult | null }
  | { id: number; ok: false; code: SandboxErrorCode; message: string; line?: number; column?: number }
