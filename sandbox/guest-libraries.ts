import { GUEST_SKETCH } from './guest-sketch.ts'

/** Modules a function can import, by name: the guest libraries, nothing of the host. */
export const GUEST_LIBRARIES: Readonly<Record<string, string>> = { 'taureau:sketch': GUEST_SKETCH }
