import { useEffect, useState } from 'preact/hooks'
import { Banner, Loading } from '../components/feedback.tsx'

type EditorModule = typeof import('../editor/function-editor.tsx')

let loading: Promise<EditorModule> | undefined

/**
 * The function editor, loaded on first use: CodeMirror and the diff are most of the UI's code,
 * and most visits never open the editor.
 */
export function FunctionEditorLoader(props: { tenantId: string; name: string | null }) {
  const [module, setModule] = useState<EditorModule | null>(null)
  const [failed, setFailed] = useState(false)
  useEffect(() => {
    let live = true
    loading ??= import('../editor/function-editor.tsx')
    loading.then(
      (loaded) => live && setModule(() => loaded),
      () => {
        loading = undefined
        if (live) setFailed(true)
      },
    )
    return () => {
      live = false
    }
  }, [])
  if (failed) {
    return (
      <Banner kind="error">
        Cannot load the editor: the gateway may have been updated.{' '}
        <button type="button" class="link-button" onClick={() => window.location.reload()}>
          Reload the page
        </button>
      </Banner>
    )
  }
  if (module === null) return <Loading what="Loading the editor" />
  // A new key per function, so switching functions starts the editor afresh.
  return <module.FunctionEditor key={props.name ?? '(new)'} tenantId={props.tenantId} name={props.name} />
}
