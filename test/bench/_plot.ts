import * as vega from 'vega'
import type { BenchPlot } from './_section.ts'

const WIDTH = 640
const HEIGHT = 340
/** Tableau 10: distinct hues, readable on white. */
const COLORS = [
  '#4e79a7',
  '#f28e2b',
  '#e15759',
  '#76b7b2',
  '#59a14f',
  '#edc948',
  '#b07aa1',
  '#ff9da7',
  '#9c755f',
  '#bab0ac',
]
/** Dash patterns cycled with the colours, so series stay apart in grey print and for colour-blind readers. */
const DASHES = [[], [6, 3], [2, 2], [8, 3, 2, 3], [1, 3], [10, 4]]

interface Datum {
  series: string
  x: number
  y: number
}

/** What rendering a plot dropped: points a log axis cannot show, or that were not numbers. */
export interface PlotRender {
  svg: string
  droppedPoints: number
}

/**
 * The Vega spec of a plot: one line per series (steps for a CDF), log axes where asked, a legend
 * under the plot, axis titles and a white background, so the SVG reads well on GitHub.
 */
export function plotSpec(plot: BenchPlot): { spec: vega.Spec; droppedPoints: number } {
  const values: Datum[] = []
  let droppedPoints = 0
  for (const series of plot.series) {
    for (const [x, y] of series.points) {
      const fits =
        Number.isFinite(x) && Number.isFinite(y) && (!plot.x.log || x > 0) && (!plot.y.log || y > 0)
      if (fits) values.push({ series: series.name, x, y })
      else droppedPoints++
    }
  }
  const names = plot.series.map((series) => series.name)
  const axis = (orient: 'bottom' | 'left', scale: string, title: string): vega.Axis => ({
    orient,
    scale,
    title,
    grid: true,
    gridColor: '#e6e6e6',
    labelOverlap: true,
    // Plain numbers with thousands separators (never 1e+3), trailing zeros dropped.
    format: ',~r',
    titleFontSize: 12,
    labelFontSize: 11,
    ...(orient === 'bottom' ? { labelFlush: true } : {}),
  })
  const spec: vega.Spec = {
    $schema: 'https://vega.github.io/schema/vega/v6.json',
    width: WIDTH,
    height: HEIGHT,
    padding: 12,
    background: 'white',
    autosize: { type: 'pad' },
    // No truncation: without a canvas, Vega overestimates text widths; the SVG grows to fit instead.
    title: { text: plot.title, anchor: 'start', fontSize: 14, offset: 12, limit: 0 },
    data: [{ name: 'points', values }],
    scales: [
      plot.x.log
        ? { name: 'x', type: 'log', domain: { data: 'points', field: 'x' }, range: 'width', nice: true }
        : {
            name: 'x',
            type: 'linear',
            domain: { data: 'points', field: 'x' },
            range: 'width',
            nice: true,
            zero: false,
          },
      plot.y.log
        ? { name: 'y', type: 'log', domain: { data: 'points', field: 'y' }, range: 'height', nice: true }
        : {
            name: 'y',
            type: 'linear',
            domain: plot.kind === 'cdf' ? [0, 1] : { data: 'points', field: 'y' },
            range: 'height',
            nice: true,
            zero: plot.kind !== 'cdf',
          },
      { name: 'color', type: 'ordinal', domain: names, range: COLORS },
      { name: 'dash', type: 'ordinal', domain: names, range: DASHES },
    ],
    axes: [axis('bottom', 'x', plot.x.label), axis('left', 'y', plot.y.label)],
    legends: [
      {
        stroke: 'color',
        strokeDash: 'dash',
        orient: 'bottom',
        direction: 'vertical',
        columns: names.length > 4 && names.every((name) => name.length <= 28) ? 2 : 1,
        symbolType: 'stroke',
        symbolSize: 400,
        symbolStrokeWidth: 2.5,
        labelFontSize: 12,
        labelLimit: 0,
        columnPadding: 24,
        offset: 16,
      },
    ],
    marks: [
      {
        type: 'group',
        from: { facet: { name: 'series', data: 'points', groupby: 'series' } },
        marks: [
          {
            type: 'line',
            from: { data: 'series' },
            sort: { field: 'datum.x' },
            encode: {
              enter: {
                x: { scale: 'x', field: 'x' },
                y: { scale: 'y', field: 'y' },
                stroke: { scale: 'color', field: 'series' },
                strokeDash: { scale: 'dash', field: 'series' },
                strokeWidth: { value: 2 },
                interpolate: { value: plot.kind === 'cdf' ? 'step-after' : 'linear' },
              },
            },
          },
          ...(plot.kind === 'line'
            ? [
                {
                  type: 'symbol' as const,
                  from: { data: 'series' },
                  encode: {
                    enter: {
                      x: { scale: 'x', field: 'x' },
                      y: { scale: 'y', field: 'y' },
                      fill: { scale: 'color', field: 'series' },
                      size: { value: 30 },
                    },
                  },
                },
              ]
            : []),
        ],
      },
    ],
  }
  return { spec, droppedPoints }
}

/**
 * Renders a plot to SVG with Vega's headless view (`renderer: 'none'`, no canvas package: text
 * widths are estimated, which is enough for labels and legends).
 */
export async function renderPlot(plot: BenchPlot): Promise<PlotRender> {
  const { spec, droppedPoints } = plotSpec(plot)
  const view = new vega.View(vega.parse(spec), { renderer: 'none' })
  try {
    const svg = await view.toSVG()
    return { svg: `${svg}\n`, droppedPoints }
  } finally {
    view.finalize()
  }
}
