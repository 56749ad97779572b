import { GUEST_SKETCH } from './guest-sketch.ts'
import { GUEST_WINDOW } from './guest-window.ts'

/** Modules a function can import, by name: the guest libraries, nothing of the host. */
export const GUEST_LIBRARIES: Readonly<Record<string, string>> = {
  'taureau:sketch': GUEST_SKETCH,
  'taureau:window': GUEST_WINDOW,
}
