// Summarizes a V8 CPU profile of a broker child (`npm run bench -- --cpu-prof gateway` writes one
// to test/bench/results/profiles/): where the busy time went, by package or source file and by
// function, self and inclusive. Idle time is left out of every percentage.
//
//   node --import tsx test/bench/profile-top.ts test/bench/results/profiles/<file>.cpuprofile [top]
import { readFileSync } from 'node:fs'

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  children?: number[]
}

interface CpuProfile {
  nodes: ProfileNode[]
  samples: number[]
  timeDeltas: number[]
}

const IDLE = '(idle)'

/** Where a frame's code lives: a package, a file of this project, or V8/Node itself. */
function areaOf(url: string, functionName: string): string {
  if (url === '') return functionName.startsWith('(') ? functionName : '(native)'
  const packageMatch = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (packageMatch?.[1] !== undefined) return packageMatch[1]
  if (url.startsWith('node:')) return 'node:internal'
  const projectMatch = /\/((?:gateway|sandbox|sync|test)\/.+)$/.exec(url)
  return projectMatch?.[1] ?? url
}

function frameName(node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame
  // Lines of .ts files are those of tsx's output, not of the source: leave them out.
  const line = url.endsWith('.ts') || url === '' ? '' : `:${lineNumber + 1}`
  return `${functionName || '(anonymous)'} ${areaOf(url, functionName)}${line}`
}

function table(title: string, totals: Map<string, number>, busyMicros: number, top: number): string {
  const rows = [...totals.entries()].sort((a, b) => b[1] - a[1]).slice(0, top)
  const lines = [
    `${title}`,
    ...rows.map(([name, micros]) => `${((micros * 100) / busyMicros).toFixed(1).padStart(6)}%  ${name}`),
  ]
  return lines.join('\n')
}

function main(): void {
  const file = process.argv[2]
  const top = Number(process.argv[3] ?? 25)
  if (file === undefined) throw new TypeError('Cannot summarize a profile as no .cpuprofile file was given')
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const parentOf = new Map<number, number>()
  for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id)

  const selfMicros = new Map<number, number>()
  profile.samples.forEach((id, index) => {
    selfMicros.set(id, (selfMicros.get(id) ?? 0) + (profile.timeDeltas[index] ?? 0))
  })

  const selfByFunction = new Map<string, number>()
  const selfByArea = new Map<string, number>()
  const inclusiveByFunction = new Map<string, number>()
  let busyMicros = 0
  for (const [id, micros] of selfMicros) {
    const node = byId.get(id)
    if (node === undefined || node.callFrame.functionName === IDLE) continue
    busyMicros += micros
    const name = frameName(node)
    selfByFunction.set(name, (selfByFunction.get(name) ?? 0) + micros)
    const area = areaOf(node.callFrame.url, node.callFrame.functionName)
    selfByArea.set(area, (selfByArea.get(area) ?? 0) + micros)
    // Inclusive: charge every distinct function on the stack once (recursion is not double-counted).
    const seen = new Set<string>()
    for (let current: number | undefined = id; current !== undefined; current = parentOf.get(current)) {
      const frame = byId.get(current)
      if (frame === undefined) break
      const frameKey = frameName(frame)
      if (seen.has(frameKey)) continue
      seen.add(frameKey)
      inclusiveByFunction.set(frameKey, (inclusiveByFunction.get(frameKey) ?? 0) + micros)
    }
  }
  const totalMicros = [...selfMicros.values()].reduce((sum, micros) => sum + micros, 0)
  process.stdout.write(
    [
      `${file}: ${(totalMicros / 1e6).toFixed(1)} s profiled, ${(busyMicros / 1e6).toFixed(1)} s busy (percentages of busy time)`,
      '',
      table('Self time by package or file:', selfByArea, busyMicros, top),
      '',
      table('Self time by function:', selfByFunction, busyMicros, top),
      '',
      table(
        'Inclusive time by function of this project:',
        new Map([...inclusiveByFunction].filter(([name]) => / (gateway|test)\//.test(name))),
        busyMicros,
        top,
      ),
      '',
    ].join('\n'),
  )
}

main()
