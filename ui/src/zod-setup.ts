import { z } from 'zod'

// Zod compiles fast parsers with `new Function` unless told not to; the page's CSP forbids that,
// and probing for it would be reported as a violation. This module is imported before any schema.
z.config({ jitless: true })
