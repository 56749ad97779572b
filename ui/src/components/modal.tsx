import { type ComponentChildren, createContext, type VNode } from 'preact'
import { useCallback, useContext, useEffect, useId, useMemo, useRef, useState } from 'preact/hooks'
import { errorsOfFailure } from '../lib/form.ts'
import { FormError } from './feedback.tsx'
import { TextField } from './field.tsx'

type Render = (close: () => void) => VNode

interface ModalContextValue {
  /** Shows a dialog; `render` gets the function that closes it. */
  open(render: Render): void
}

const ModalContext = createContext<ModalContextValue | null>(null)

/**
 * Hosts the app's one modal dialog. While it is open the rest of the app is hidden from assistive
 * technology (besides being inert under the modal), so its buttons are the only ones named.
 */
export function ModalProvider({ children }: { children: ComponentChildren }) {
  const [render, setRender] = useState<Render | null>(null)
  const close = useCallback(() => setRender(null), [])
  const value = useMemo<ModalContextValue>(() => ({ open: (next) => setRender(() => next) }), [])
  return (
    <ModalContext.Provider value={value}>
      <div class="app-root" aria-hidden={render === null ? undefined : 'true'}>
        {children}
      </div>
      {render?.(close)}
    </ModalContext.Provider>
  )
}

/** Opens dialogs; only inside {@link ModalProvider}. */
export function useModal(): ModalContextValue {
  const value = useContext(ModalContext)
  if (value === null) throw new TypeError('Cannot open a dialog outside the modal provider')
  return value
}

/** A modal dialog with a title; Escape and Cancel close it. */
export function Dialog(props: { title: string; onClose: () => void; children: ComponentChildren }) {
  const ref = useRef<HTMLDialogElement>(null)
  const titleId = useId()
  useEffect(() => {
    const dialog = ref.current
    if (dialog !== null && !dialog.open) dialog.showModal()
    return () => dialog?.close()
  }, [])
  return (
    <dialog
      ref={ref}
      class="modal"
      aria-labelledby={titleId}
      onCancel={(event) => {
        event.preventDefault()
        props.onClose()
      }}
    >
      <h2 id={titleId}>{props.title}</h2>
      {props.children}
    </dialog>
  )
}

/** What {@link useConfirm} asks. */
export interface ConfirmOptions {
  title: string
  message: ComponentChildren
  /** The confirming button's text: the action, e.g. `Delete tenant`. */
  confirmLabel: string
  /** A destructive action: the button is red. */
  danger?: boolean
  /** The user must type this (a name) before the button works. */
  typeToConfirm?: { label: string; value: string }
  /** Runs on confirmation; its failure shows in the dialog, which stays open. */
  action: () => Promise<void>
}

/** Asks before an action and runs it; resolves whether it ran. */
export function useConfirm(): (options: ConfirmOptions) => Promise<boolean> {
  const { open } = useModal()
  return useCallback(
    (options) =>
      new Promise<boolean>((resolve) => {
        open((close) => (
          <ConfirmDialog
            {...options}
            onDone={(done) => {
              close()
              resolve(done)
            }}
          />
        ))
      }),
    [open],
  )
}

function ConfirmDialog(props: ConfirmOptions & { onDone: (done: boolean) => void }) {
  const [typed, setTyped] = useState('')
  const [busy, setBusy] = useState(false)
  const [error, setError] = useState<string | undefined>(undefined)
  const inputId = useId()
  const ready = props.typeToConfirm === undefined || typed === props.typeToConfirm.value
  const run = async (event: Event) => {
    event.preventDefault()
    if (!ready || busy) return
    setBusy(true)
    setError(undefined)
    try {
      await props.action()
      props.onDone(true)
    } catch (failure) {
      setError(errorsOfFailure(failure)[''] ?? Object.values(errorsOfFailure(failure))[0])
      setBusy(false)
    }
  }
  return (
    <Dialog title={props.title} onClose={() => props.onDone(false)}>
      <form onSubmit={run}>
        <div class="modal-body">{props.message}</div>
        {props.typeToConfirm !== undefined && (
          <TextField
            id={inputId}
            label={props.typeToConfirm.label}
            value={typed}
            onValue={setTyped}
            input={{ autoComplete: 'off', autoFocus: true }}
          />
        )}
        <FormError message={error} />
        <div class="actions end">
          <button type="button" onClick={() => props.onDone(false)}>
            Cancel
          </button>
          <button
            type="submit"
            class={props.danger === true ? 'danger' : 'primary'}
            disabled={!ready || busy}
            aria-busy={busy}
          >
            {props.confirmLabel}
          </button>
        </div>
      </form>
    </Dialog>
  )
}
