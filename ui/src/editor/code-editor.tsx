import { javascriptLanguage } from '@codemirror/lang-javascript'
import { type Diagnostic, lintGutter, setDiagnostics } from '@codemirror/lint'
import { EditorState } from '@codemirror/state'
import { EditorView, highlightActiveLine, highlightActiveLineGutter, lineNumbers } from '@codemirror/view'
import { minimalSetup } from 'codemirror'
import { useEffect, useRef } from 'preact/hooks'

/** A problem of the source at a line (1-based) and column (1-based), from the compile check. */
export interface SourceProblem {
  line: number | undefined
  column: number | undefined
  message: string
}

const theme = EditorView.theme({
  '&': { fontSize: '13px', height: '100%', backgroundColor: 'var(--code-bg)', color: 'var(--code-text)' },
  '&.cm-focused': { outline: 'none' },
  '.cm-scroller': {
    fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace',
    lineHeight: '1.5',
  },
  '.cm-content': { caretColor: 'var(--code-text)' },
  '.cm-gutters': {
    backgroundColor: 'var(--code-gutter)',
    color: 'var(--text-muted)',
    borderRight: '1px solid var(--border)',
  },
  '.cm-activeLine': { backgroundColor: 'var(--code-active)' },
  '.cm-activeLineGutter': { backgroundColor: 'var(--code-active)' },
})

/** Where a problem is in the document: its column's character, or the whole line without one. */
function diagnosticOf(state: EditorState, problem: SourceProblem): Diagnostic {
  const line = state.doc.line(Math.min(Math.max(problem.line ?? 1, 1), state.doc.lines))
  const from =
    problem.column === undefined ? line.from : Math.min(line.from + Math.max(problem.column - 1, 0), line.to)
  const to = problem.column === undefined ? line.to : Math.min(from + 1, line.to)
  return { from, to, severity: 'error', source: 'compile check', message: problem.message }
}

/**
 * The JavaScript editor (CodeMirror 6). It owns its document: `source` is read once, and again
 * only when `revision` changes (a rollback replaced the code). The problem of the last compile
 * check shows as a lint diagnostic at its line and column.
 */
export function CodeEditor(props: {
  source: string
  revision: number
  /** The accessible name of the editor; the page shows the same text as its heading. */
  label: string
  problem: SourceProblem | null
  onChange: (source: string) => void
}) {
  const host = useRef<HTMLDivElement>(null)
  const view = useRef<EditorView | null>(null)
  const onChange = useRef(props.onChange)
  onChange.current = props.onChange

  useEffect(() => {
    if (host.current === null) return
    // In a shadow root, CodeMirror's styles go in constructed style sheets; in the document it
    // would add a <style> element, which the page's Content-Security-Policy refuses.
    const shadow = host.current.shadowRoot ?? host.current.attachShadow({ mode: 'open' })
    const parent = document.createElement('div')
    parent.style.height = '100%'
    shadow.replaceChildren(parent)
    const editor = new EditorView({
      root: shadow,
      parent,
      state: EditorState.create({
        doc: props.source,
        extensions: [
          lineNumbers(),
          highlightActiveLineGutter(),
          highlightActiveLine(),
          minimalSetup,
          javascriptLanguage.extension,
          lintGutter(),
          theme,
          // A label by id cannot reach into the shadow root: the label's text is given instead.
          EditorView.contentAttributes.of({ 'aria-label': props.label }),
          EditorView.updateListener.of((update) => {
            if (update.docChanged) onChange.current(update.state.doc.toString())
          }),
        ],
      }),
    })
    view.current = editor
    return () => {
      editor.destroy()
      view.current = null
    }
  }, [])

  useEffect(() => {
    const editor = view.current
    if (editor === null || props.revision === 0) return
    const current = editor.state.doc.toString()
    if (current !== props.source) {
      editor.dispatch({ changes: { from: 0, to: editor.state.doc.length, insert: props.source } })
    }
  }, [props.revision])

  useEffect(() => {
    const editor = view.current
    if (editor === null) return
    const diagnostics = props.problem === null ? [] : [diagnosticOf(editor.state, props.problem)]
    editor.dispatch(setDiagnostics(editor.state, diagnostics))
  }, [props.problem])

  return <div ref={host} class="code-editor" />
}
