import type { ComponentChildren } from 'preact'

/** A message across a page or form: an error, a success, or information. */
export function Banner(props: {
  kind: 'error' | 'success' | 'info' | 'warning'
  children: ComponentChildren
  onDismiss?: () => void
}) {
  return (
    <div class={`banner ${props.kind}`} role={props.kind === 'error' ? 'alert' : 'status'}>
      <div class="banner-text">{props.children}</div>
      {props.onDismiss !== undefined && (
        <button type="button" class="link-button" onClick={props.onDismiss}>
          Dismiss
        </button>
      )}
    </div>
  )
}

/** The form-wide error of a form (`errors['']`), when there is one. */
export function FormError({ message }: { message: string | undefined }) {
  return message === undefined ? null : <Banner kind="error">{message}</Banner>
}

/** Something is on its way. */
export function Loading({ what = 'Loading' }: { what?: string }) {
  return (
    <p class="loading" role="status">
      <span class="spinner" aria-hidden="true" />
      {what}…
    </p>
  )
}

/** A fetch failed: what went wrong, and a way to try again. */
export function LoadError({ message, retry }: { message: string; retry?: () => void }) {
  return (
    <Banner kind="error">
      {message}{' '}
      {retry !== undefined && (
        <button type="button" class="link-button" onClick={retry}>
          Try again
        </button>
      )}
    </Banner>
  )
}

/** A list with nothing in it, and what to do about that. */
export function Empty({ title, children }: { title: string; children?: ComponentChildren }) {
  return (
    <div class="empty">
      <p class="empty-title">{title}</p>
      {children !== undefined && <p class="muted">{children}</p>}
    </div>
  )
}

/** A small coloured label: a state, a scope. */
export function Badge({
  tone,
  children,
}: {
  tone: 'ok' | 'warn' | 'bad' | 'muted' | 'info'
  children: ComponentChildren
}) {
  return <span class={`badge ${tone}`}>{children}</span>
}

/** Used out of a limit, as a bar and figures. */
export function Meter(props: {
  label: string
  value: number
  max: number
  format: (value: number) => string
}) {
  const ratio = props.max > 0 ? Math.min(1, props.value / props.max) : 0
  const tone = ratio >= 0.9 ? 'bad' : ratio >= 0.7 ? 'warn' : 'ok'
  return (
    <div class="meter">
      <div class="meter-head">
        <span>{props.label}</span>
        <span class="num">
          {props.format(props.value)} / {props.format(props.max)} ({Math.round(ratio * 100)}%)
        </span>
      </div>
      <div class={`meter-bar ${tone}`} aria-hidden="true">
        <span style={{ width: `${ratio * 100}%` }} />
      </div>
    </div>
  )
}
