import type { BenchFigure, BenchSection, BenchTable } from './_section.ts'

/**
 * A cell of a markdown table: numbers as given (their producer rounded them), grouped in
 * thousands; NaN as `n/a`; pipes and newlines escaped.
 */
export function formatCell(value: string | number): string {
  if (typeof value === 'number') {
    return Number.isFinite(value) ? value.toLocaleString('en-US', { maximumFractionDigits: 6 }) : 'n/a'
  }
  return value.replaceAll('|', '\\|').replaceAll('\n', ' ')
}

/**
 * A number for people: NaN as `n/a`, three significant digits (`0.00374`, `12.3`, `456`),
 * and numbers from 1000 up rounded and grouped in thousands (`12,345`).
 */
export function formatNumber(value: number): string {
  if (!Number.isFinite(value)) return 'n/a'
  const magnitude = Math.abs(value)
  if (magnitude >= 1000) return Math.round(value).toLocaleString('en-US')
  if (magnitude === 0) return '0'
  const digits = Math.max(0, 2 - Math.floor(Math.log10(magnitude)))
  return Number(value.toFixed(digits)).toLocaleString('en-US', { maximumFractionDigits: digits })
}

/** A table as GitHub markdown, its caption in italics above it. */
export function tableMarkdown(table: BenchTable): string {
  const lines = [
    `*${table.caption}*`,
    '',
    `| ${table.columns.map(formatCell).join(' | ')} |`,
    `|${table.columns.map(() => '---').join('|')}|`,
    ...table.rows.map((row) => `| ${row.map(formatCell).join(' | ')} |`),
  ]
  return lines.join('\n')
}

/** Whether a figure meets its goal: `undefined` without a goal or a finite value. */
export function goalMet(figure: BenchFigure): boolean | undefined {
  if (figure.goal === undefined || !Number.isFinite(figure.value)) return undefined
  return figure.goal.op === '<=' ? figure.value <= figure.goal.value : figure.value >= figure.goal.value
}

/** The figures as the table "figure | value | peer | ratio | goal met?". */
export function figuresTable(figures: readonly BenchFigure[]): BenchTable {
  return {
    caption: 'Figures (each against its peer measured in the same run; ratio = value / peer)',
    columns: ['figure', 'value', 'peer', 'ratio', 'goal met?'],
    rows: figures.map((figure) => {
      const met = goalMet(figure)
      const withUnit = (value: number) =>
        `${formatNumber(value)}${figure.unit === '×' ? '' : ' '}${figure.unit}`
      const goal =
        figure.goal === undefined
          ? ''
          : `${met === undefined ? 'n/a' : met ? 'yes' : '**no**'} (${figure.goal.op === '<=' ? '≤' : '≥'} ${withUnit(figure.goal.value)})`
      return [
        figure.note === undefined ? figure.name : `${figure.name} (${figure.note})`,
        withUnit(figure.value),
        figure.peer === undefined ? '' : `${withUnit(figure.peer.value)} (${figure.peer.name})`,
        figure.ratio === undefined ? '' : `${formatNumber(figure.ratio)}×`,
        goal,
      ]
    }),
  }
}

/** A section's figures and tables as markdown, for a benchmark's stdout. */
export function sectionSummary(section: BenchSection): string {
  return [figuresTable(section.figures), ...section.tables].map(tableMarkdown).join('\n\n')
}

/** `1 round`, `3 rounds`. */
export function plural(count: number, word: string): string {
  return `${formatNumber(count)} ${word}${count === 1 ? '' : 's'}`
}
