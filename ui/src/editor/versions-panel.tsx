import { type ChangeObject, diffLines } from 'diff'
import { useEffect, useMemo, useRef, useState } from 'preact/hooks'
import { rollbackSchema } from '../../../gateway/api-schemas.ts'
import { path, request } from '../api/client.ts'
import type { FunctionVersion, FunctionView } from '../api/types.ts'
import { Badge, FormError, LoadError, Loading } from '../components/feedback.tsx'
import { useForm } from '../lib/form.ts'
import { formatTime } from '../lib/format.ts'
import { useApi } from '../lib/use-api.ts'
import { describeTrigger } from '../pages/functions.tsx'

/** Unchanged lines kept around each change; longer unchanged runs fold. */
const CONTEXT_LINES = 3

interface DiffLine {
  kind: 'add' | 'remove' | 'same' | 'fold'
  text: string
}

/** A line diff as rows, unchanged runs folded down to their context. */
function diffRows(changes: Array<ChangeObject<string>>): DiffLine[] {
  const rows: DiffLine[] = []
  changes.forEach((change, index) => {
    const lines = change.value.replace(/\n$/, '').split('\n')
    if (change.added || change.removed) {
      for (const line of lines) rows.push({ kind: change.added ? 'add' : 'remove', text: line })
      return
    }
    const head = index === 0 ? 0 : CONTEXT_LINES
    const tail = index === changes.length - 1 ? 0 : CONTEXT_LINES
    if (lines.length <= head + tail + 1) {
      for (const line of lines) rows.push({ kind: 'same', text: line })
      return
    }
    for (const line of lines.slice(0, head)) rows.push({ kind: 'same', text: line })
    rows.push({ kind: 'fold', text: `${lines.length - head - tail} unchanged lines` })
    for (const line of lines.slice(lines.length - tail)) rows.push({ kind: 'same', text: line })
  })
  return rows
}

const MARKS = { add: '+', remove: '-', same: ' ', fold: '…' } as const

/** The kept versions of a function: compare one with the current version, and roll back to it. */
export function VersionsPanel(props: { tenantId: string; fn: FunctionView; onRolledBack: () => void }) {
  const { tenantId, fn } = props
  const base = path`tenants/${tenantId}/functions/${fn.name}/versions`
  const versions = useApi<{ versions: FunctionVersion[] }>(base)
  const [selected, setSelected] = useState<number | null>(null)
  const form = useForm()
  const list = useMemo(
    () => [...(versions.data?.versions ?? [])].sort((a, b) => b.version - a.version),
    [versions.data],
  )

  // A deploy or rollback elsewhere on the page lists the versions again.
  const shownVersion = useRef(`${fn.version}/${fn.latestVersion}`)
  useEffect(() => {
    const now = `${fn.version}/${fn.latestVersion}`
    if (shownVersion.current === now) return
    shownVersion.current = now
    versions.reload()
  }, [fn.version, fn.latestVersion, versions.reload])
  // The newest version that is not current is compared at first: usually the one before the last deploy.
  const compared = selected ?? list.find((version) => !version.current)?.version ?? null
  const current = useApi<{ version: FunctionVersion }>(`${base}/${fn.version}`)
  const other = useApi<{ version: FunctionVersion }>(compared === null ? null : `${base}/${compared}`)
  const currentSource = current.data?.version.source
  const otherSource = other.data?.version.source
  const rows = useMemo(
    () =>
      currentSource === undefined || otherSource === undefined
        ? null
        : diffRows(diffLines(currentSource, otherSource)),
    [currentSource, otherSource],
  )

  const rollback = async () => {
    if (compared === null) return
    await form.submit(rollbackSchema, { version: compared }, async (body) => {
      await request('POST', path`tenants/${tenantId}/functions/${fn.name}/rollback`, { body })
      setSelected(null)
      props.onRolledBack()
    })
  }

  return (
    <section class="card" aria-labelledby="versions-title">
      <h3 class="card-title" id="versions-title">
        Versions
      </h3>
      {versions.error !== null && <LoadError message={versions.error} retry={versions.reload} />}
      {versions.data === undefined ? (
        versions.error === null && <Loading />
      ) : (
        <table class="table compact">
          <thead>
            <tr>
              <th scope="col">Version</th>
              <th scope="col">Deployed</th>
              <th scope="col">Triggers</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {list.map((version) => (
              <tr key={version.version} class={version.version === compared ? 'selected' : undefined}>
                <td>
                  v{version.version} {version.current && <Badge tone="info">current</Badge>}
                </td>
                <td>{formatTime(version.createdAt)}</td>
                <td class="mono small-text">{version.triggers.map(describeTrigger).join(', ')}</td>
                <td class="row-actions">
                  {!version.current && (
                    <button
                      type="button"
                      class="small"
                      aria-pressed={version.version === compared}
                      onClick={() => setSelected(version.version)}
                    >
                      Compare v{version.version}
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {compared === null ? (
        versions.data !== undefined && <p class="muted">Only the current version is kept so far.</p>
      ) : (
        <div class="diff-block">
          <div class="card-head">
            <span>
              <strong>v{fn.version}</strong> (current) → <strong>v{compared}</strong>
              <span class="muted">
                {' '}
                · − only in v{fn.version}, + only in v{compared}
              </span>
            </span>
            <button type="button" class="primary small" disabled={form.busy} onClick={() => void rollback()}>
              Roll back to v{compared}
            </button>
          </div>
          <FormError message={form.errors[''] ?? form.errors.version} />
          {(other.error ?? current.error) !== null && (
            <LoadError message={other.error ?? current.error ?? ''} />
          )}
          {rows === null ? (
            other.error === null && <Loading what="Loading the sources" />
          ) : (
            <pre class="diff" data-testid="version-diff">
              {rows.length === 0 || rows.every((row) => row.kind === 'same') ? (
                <span class="diff-line same">The sources are the same; only the settings differ.</span>
              ) : (
                rows.map((row, index) => (
                  <span key={index} class={`diff-line ${row.kind}`}>
                    {MARKS[row.kind]} {row.text}
                    {'\n'}
                  </span>
                ))
              )}
            </pre>
          )}
        </div>
      )}
    </section>
  )
}
