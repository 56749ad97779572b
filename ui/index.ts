// The public API of the ui folder: building it. The gateway serves the built files of `ui/dist`
// by path and imports nothing from here.
export { type BuildUiOptions, buildUi, UI_BUDGET_BYTES, type UiAsset, type UiBuildReport } from './build.ts'
