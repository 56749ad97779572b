import { parentPort } from 'node:worker_threads'
import { SandboxError } from './errors.ts'
import { createTenantSandbox, type HandlerName, type TenantSandbox } from './tenant-sandbox.ts'
import type { WorkerReply, WorkerRequest } from './worker-protocol.ts'

// A pool worker: hosts the sandboxes of the tenants sharded to it and answers one request at a
// time. It never touches the database or the network; it only computes.
const port = parentPort
if (port === null) throw new Error('sandbox/worker-main.ts runs only as a worker thread')

const sandboxes = new Map<string, Promise<TenantSandbox>>()
const sources = new Map<string, Map<string, { source: string; handlers: HandlerName[] }>>()

async function sandboxOf(tenantId: string, memoryLimitBytes: number): Promise<TenantSandbox> {
  let sandbox = sandboxes.get(tenantId)
  if (sandbox !== undefined) {
    const current = await sandbox
    if (!current.broken) return current
    // A broken sandbox is dropped and rebuilt with the tenant's functions compiled again.
    sandboxes.delete(tenantId)
    current.dispose()
  }
  sandbox = createTenantSandbox({ tenantId, memoryLimitBytes }).then((fresh) => {
    for (const [key, entry] of sources.get(tenantId) ?? []) fresh.compile(key, entry.source, entry.handlers)
    return fresh
  })
  sandboxes.set(tenantId, sandbox)
  return sandbox
}

async function handle(request: WorkerRequest): Promise<WorkerReply> {
  switch (request.type) {
    case 'compile': {
      const sandbox = await sandboxOf(request.tenantId, request.memoryLimitBytes)
      sandbox.compile(request.key, request.source, request.handlers)
      let functions = sources.get(request.tenantId)
      if (functions === undefined) {
        functions = new Map()
        sources.set(request.tenantId, functions)
      }
      functions.set(request.key, { source: request.source, handlers: request.handlers })
      return { id: request.id, ok: true, result: null }
    }
    case 'remove': {
      sources.get(request.tenantId)?.delete(request.key)
      const sandbox = sandboxes.get(request.tenantId)
      if (sandbox !== undefined) (await sandbox).remove(request.key)
      return { id: request.id, ok: true, result: null }
    }
    case 'invoke': {
      const sandbox = await sandboxOf(request.tenantId, request.memoryLimitBytes)
      const result = sandbox.invoke(
        request.key,
        request.handler,
        request.args,
        request.info,
        request.deadlineMs,
      )
      return { id: request.id, ok: true, result }
    }
  }
}

port.postMessage({ ready: true })

port.on('message', (request: WorkerRequest) => {
  handle(request).then(
    (reply) => port.postMessage(reply),
    (error: unknown) => {
      const known = error instanceof SandboxError
      port.postMessage({
        id: request.id,
        ok: false,
        code: known ? error.code : 'broken',
        message: known ? error.message : 'The sandbox worker failed',
        ...(known && error.line !== undefined ? { line: error.line } : {}),
        ...(known && error.column !== undefined ? { column: error.column } : {}),
      } satisfies WorkerReply)
    },
  )
})
