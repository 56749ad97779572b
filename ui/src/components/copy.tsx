import type { ComponentChildren } from 'preact'
import { useRef, useState } from 'preact/hooks'
import { copyText } from '../lib/clipboard.ts'

/**
 * A value to copy (a secret, a command) with its Copy button. Where the clipboard is not
 * available (plain http) the button selects the text for Ctrl+C instead.
 */
export function CopyBox(props: {
  label: string
  testId?: string
  /** Shown in a block (a command) rather than inline (a secret). */
  block?: boolean
  children: ComponentChildren
}) {
  const ref = useRef<HTMLElement | null>(null)
  const keep = (element: HTMLElement | null) => {
    ref.current = element
  }
  const [done, setDone] = useState<'copied' | 'selected' | null>(null)
  const copy = async () => {
    if (ref.current !== null) setDone(await copyText(ref.current))
  }
  return (
    <div class="copy-box">
      <span class="copy-label">{props.label}</span>
      <div class="copy-row">
        {props.block === true ? (
          <pre ref={keep} class="copy-value" data-testid={props.testId}>
            {props.children}
          </pre>
        ) : (
          <code ref={keep} class="copy-value" data-testid={props.testId}>
            {props.children}
          </code>
        )}
        <button type="button" class="small" onClick={copy}>
          Copy {props.label.toLowerCase()}
        </button>
      </div>
      {done !== null && (
        <span class="hint" role="status">
          {done === 'copied' ? 'Copied to the clipboard.' : 'Selected: press Ctrl+C (⌘C) to copy.'}
        </span>
      )}
    </div>
  )
}
