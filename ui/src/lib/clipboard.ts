/**
 * Copies the text of `element` to the clipboard. The clipboard API needs a secure context, which
 * an edge box on plain http is not; there the text is selected instead, for Ctrl+C.
 * Resolves `copied` or `selected`.
 */
export async function copyText(element: HTMLElement): Promise<'copied' | 'selected'> {
  const text = element.textContent ?? ''
  if (window.isSecureContext && navigator.clipboard !== undefined) {
    try {
      await navigator.clipboard.writeText(text)
      return 'copied'
    } catch {
      // Denied: fall back to selecting.
    }
  }
  const selection = window.getSelection()
  selection?.removeAllRanges()
  const range = document.createRange()
  range.selectNodeContents(element)
  selection?.addRange(range)
  return 'selected'
}
