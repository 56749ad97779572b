import { useEffect, useRef, useState } from 'preact/hooks'
import uPlot from 'uplot'
import 'uplot/dist/uPlot.min.css'
import { formatNumber } from '../lib/format.ts'

/** One line of a chart. */
export interface ChartLine {
  label: string
  color: string
  /** Values aligned with the chart's times; null leaves a gap. */
  values: ReadonlyArray<number | null>
  /** Mark each value: for sparse series, whose lone values would not show as a line. */
  points?: boolean
}

const HEIGHT = 170

/** Whether the page is shown dark, following the system, updated when it changes. */
function useDark(): boolean {
  const query = '(prefers-color-scheme: dark)'
  const [dark, setDark] = useState(() => window.matchMedia(query).matches)
  useEffect(() => {
    const media = window.matchMedia(query)
    const change = () => setDark(media.matches)
    media.addEventListener('change', change)
    return () => media.removeEventListener('change', change)
  }, [])
  return dark
}

/**
 * A live time-series chart (uPlot). The plot is made once per colour scheme and fed new data
 * with `setData`, so appending samples costs one redraw.
 */
export function TimeChart(props: {
  title: string
  testId: string
  /** Epoch milliseconds of each point. */
  times: readonly number[]
  lines: ChartLine[]
  unit?: string
}) {
  const host = useRef<HTMLDivElement>(null)
  const plot = useRef<uPlot | null>(null)
  const dark = useDark()
  const data = (): uPlot.AlignedData => [
    props.times.map((t) => t / 1000),
    ...props.lines.map((line) => line.values as Array<number | null>),
  ]
  const labels = props.lines.map((line) => `${line.label}:${line.color}`).join('|')

  useEffect(() => {
    const element = host.current
    if (element === null) return
    const styles = getComputedStyle(document.documentElement)
    const axisColor = styles.getPropertyValue('--text-muted').trim() || '#667'
    const gridColor = styles.getPropertyValue('--border').trim() || '#ddd'
    const axis: uPlot.Axis = {
      stroke: axisColor,
      grid: { stroke: gridColor, width: 1 },
      ticks: { stroke: gridColor, width: 1 },
      font: '11px system-ui, sans-serif',
    }
    const options: uPlot.Options = {
      width: Math.max(element.clientWidth, 200),
      height: HEIGHT,
      cursor: { drag: { x: false, y: false } },
      scales: { y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      series: [
        {},
        ...props.lines.map((line) => ({
          label: line.label,
          stroke: line.color,
          width: 1.5,
          fill: `${line.color}1a`,
          points: { show: line.points === true, size: 4 },
          value: (_u: uPlot, value: number | null) => (value === null ? '–' : formatNumber(value)),
        })),
      ],
      axes: [axis, { ...axis, size: 48, values: (_u, values) => values.map((value) => formatNumber(value)) }],
    }
    const chart = new uPlot(options, data(), element)
    plot.current = chart
    const observer = new ResizeObserver(() => {
      chart.setSize({ width: Math.max(element.clientWidth, 200), height: HEIGHT })
    })
    observer.observe(element)
    return () => {
      observer.disconnect()
      chart.destroy()
      plot.current = null
    }
  }, [labels, dark])

  useEffect(() => {
    plot.current?.setData(data())
  }, [props.times, props.lines])

  return (
    <section
      class="card chart"
      data-testid={props.testId}
      data-total={props.lines.reduce(
        (sum, line) => sum + line.values.reduce<number>((a, v) => a + (v ?? 0), 0),
        0,
      )}
      aria-label={props.title}
    >
      <h3 class="card-title">
        {props.title}
        {props.unit !== undefined && <span class="muted"> ({props.unit})</span>}
      </h3>
      <div ref={host} class="chart-host" />
    </section>
  )
}
