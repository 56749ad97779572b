import { connect, createServer, type Socket } from 'node:net'

/** A TCP proxy on 127.0.0.1 that a test can cut: every connection is dropped and new ones refused. */
export interface TcpProxy {
  readonly port: number
  /** Drops every connection and refuses new ones until `restore()`. */
  cut(): void
  restore(): void
  /** Points new connections at another port (a restarted server). */
  retarget(port: number): void
  close(): Promise<void>
}

export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  let target = targetPort
  let cut = false
  const sockets = new Set<Socket>()
  const server = createServer((client) => {
    if (cut) {
      client.destroy()
      return
    }
    const upstream = connect({ host: '127.0.0.1', port: target })
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.on('error', () => {})
      socket.on('close', () => {
        sockets.delete(socket)
        client.destroy()
        upstream.destroy()
      })
    }
    client.pipe(upstream)
    upstream.pipe(client)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  return {
    port: typeof address === 'object' && address !== null ? address.port : 0,
    cut() {
      cut = true
      for (const socket of sockets) socket.destroy()
    },
    restore() {
      cut = false
    },
    retarget(port) {
      target = port
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  }
}
