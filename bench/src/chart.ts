// The bench chart: throughput and p99 latency per strategy side by side, the ceiling included,
// declared in Vega-Lite and rendered to an SVG string by Vega's headless renderer (no browser).
import { parse, View } from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { allRows, isCeilingRun, type BenchReport } from './report.js';

/** One panel of a horizontal concatenation, as Vega-Lite types it. */
type Panel = Extract<TopLevelSpec, { hconcat: unknown }>['hconcat'][number];

const COLORS = { ceiling: '#9e9e9e', ok: '#4c78a8', 'expected over-issue': '#f58518', FAIL: '#e45756' } as const;

export async function renderChart(report: BenchReport): Promise<string | undefined> {
  const measured = allRows(report).filter((r) => r.requestsPerSecond !== undefined && r.latencyMs !== undefined);
  if (measured.length === 0) return undefined;
  const values = measured.map((r) => ({
    strategy: r.name === 'ceiling' ? 'ceiling (node:http)' : r.name === 'ceiling-after' ? 'ceiling, after' : r.name,
    rps: Math.round(r.requestsPerSecond ?? 0),
    p99: Number((r.latencyMs?.p99 ?? 0).toFixed(2)),
    kind: isCeilingRun(r) ? 'ceiling' : r.verdict,
  }));
  const order = values.map((v) => v.strategy);
  const y = { field: 'strategy', type: 'nominal', sort: order, title: null } as const;
  const color = { field: 'kind', type: 'nominal', title: 'verdict', scale: { domain: Object.keys(COLORS), range: Object.values(COLORS) } } as const;
  const panel = (field: 'rps' | 'p99', title: string, format: string): Panel => ({
    title,
    width: 320,
    height: { step: 22 },
    encoding: { y, x: { field, type: 'quantitative', title: null } },
    layer: [
      { mark: { type: 'bar' }, encoding: { color } },
      { mark: { type: 'text', align: 'left', dx: 3, fontSize: 10 }, encoding: { text: { field, type: 'quantitative', format } } },
    ],
  });
  const spec: TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: `couponrush bench — ${report.startedAt.slice(0, 16).replace('T', ' ')} UTC`,
      subtitle: `${report.machine.cpus} × ${report.machine.cpuModel}; ${report.config.connections} connections, stock ${report.config.stock}`,
    },
    background: 'white',
    padding: 12,
    data: { values },
    hconcat: [panel('rps', 'Throughput (req/s, higher is better)', ',.0f'), panel('p99', 'p99 latency (ms, lower is better)', ',.1f')],
    resolve: { scale: { y: 'shared' } },
  };
  const view = new View(parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
