// One time-series chart (uPlot): created once, fed new columns on every sample, resized with its
// box. The figure carries a text summary for screen readers; the canvas itself is hidden from them.
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import { clock, hoursMinutes } from './time.js';

export interface Line {
  label: string;
  color: string;
  dash?: number[];
  /** Stroke width in px (2 by default): a wide pale line under a thin dark one keeps both visible where they coincide. */
  width?: number;
}

interface ChartProps {
  title: string;
  /** What a screen reader hears instead of the drawing: the latest values. */
  summary: string;
  lines: Line[];
  /** x in seconds (unix), then one column per line. */
  data: Array<Array<number | null>>;
  unit?: string;
}

export function Chart({ title, summary, lines, data, unit }: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);

  useEffect(() => {
    const el = box.current!;
    const opts: uPlot.Options = {
      width: Math.max(240, el.clientWidth),
      height: 180,
      legend: { show: true, live: false },
      scales: { x: { time: true } },
      // 24-hour ticks in the browser's zone (uPlot's default is a 12-hour clock).
      axes: [{ space: 80, incrs: TICK_SECONDS, values: (_u, ticks) => ticks.map((t) => (ticks.every((x) => x % 60 === 0) ? hoursMinutes(t * 1000) : clock(t * 1000))) }, { size: unit === undefined ? 56 : 72, values: (_u, ticks) => ticks.map((t) => `${formatNumber(t)}${unit ?? ''}`) }],
      series: [
        {},
        // A wide line is a band under another: its points would hide the other's.
        ...lines.map((l) => ({ label: l.label, stroke: l.color, width: l.width ?? 2, ...(l.dash === undefined ? {} : { dash: l.dash }), ...((l.width ?? 2) > 2 ? { points: { show: false } } : {}), spanGaps: false })),
      ],
    };
    plot.current = new uPlot(opts, data as uPlot.AlignedData, el);
    const resize = new ResizeObserver(() => plot.current?.setSize({ width: Math.max(240, el.clientWidth), height: 180 }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, []);

  useEffect(() => {
    plot.current?.setData(data as uPlot.AlignedData);
  }, [data]);

  return (
    <figure class="chart">
      <figcaption>{title}</figcaption>
      <div ref={box} aria-hidden="true" />
      <p class="sr-only">{summary}</p>
    </figure>
  );
}

/** The x axis's tick steps, whole seconds up to an hour (the page keeps five minutes). */
const TICK_SECONDS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];

export function formatNumber(n: number): string {
  if (!Number.isFinite(n)) return '–';
  if (Math.abs(n) >= 10_000) return `${(n / 1000).toFixed(n >= 100_000 ? 0 : 1)}k`;
  return Number.isInteger(n) ? n.toLocaleString('en') : n.toFixed(n < 10 ? 1 : 0);
}
