// Hot-path counting without prom-client on the hot path. prom-client hashes and validates the
// labels on every inc()/observe(); under the bench's stampede that was ~2% of the issue route.
// Here a request adds to a plain number in a pre-created cell, and prom-client reads the cells
// only when /metrics is scraped (a Counter's collect(), or a histogram object in the shape
// prom-client's own Histogram.get() returns, which the registry and the cluster aggregator read).
import { Counter, type Metric, type Registry } from 'prom-client';

/** One labelled series of a counter: the hot path does `cell.n++`. */
export interface Cell {
  n: number;
}

/** A counter whose series are cells; `cell(labels)` is for start-up and rare paths, not per request. */
export class CellCounter<L extends string> {
  private readonly cells = new Map<string, { labels: Record<L, string>; cell: Cell }>();

  constructor(registry: Registry, name: string, help: string, labelNames: readonly L[]) {
    const cells = this.cells;
    new Counter({
      name,
      help,
      labelNames: labelNames as L[],
      registers: [registry],
      collect() {
        this.reset();
        for (const { labels, cell } of cells.values()) this.inc(labels as Partial<Record<L, string | number>>, cell.n);
      },
    });
  }

  /** Every series so far, for readers other than prom-client (the console's counters). */
  *series(): Iterable<{ readonly labels: Readonly<Record<L, string>>; readonly cell: Cell }> {
    yield* this.cells.values();
  }

  /** The cell of these labels, created (and exported at 0) on first use. */
  cell(labels: Record<L, string>): Cell {
    const key = JSON.stringify(labels);
    let entry = this.cells.get(key);
    if (entry === undefined) {
      entry = { labels, cell: { n: 0 } };
      this.cells.set(key, entry);
    }
    return entry.cell;
  }
}

/** An unlabelled histogram with plain bucket counts. */
export class CellHistogram {
  private readonly counts: Float64Array;
  private sum = 0;
  private count = 0;

  constructor(
    registry: Registry,
    readonly name: string,
    readonly help: string,
    private readonly upperBounds: readonly number[],
  ) {
    this.counts = new Float64Array(upperBounds.length);
    const self = this;
    const metric = {
      name,
      help,
      type: 'histogram',
      aggregator: 'sum',
      get: async () => self.get(),
    };
    registry.registerMetric(metric as unknown as Metric);
  }

  observe(value: number): void {
    const bounds = this.upperBounds;
    for (let i = 0; i < bounds.length; i++) {
      if (value <= bounds[i]!) {
        this.counts[i]!++;
        break;
      }
    }
    this.sum += value;
    this.count++;
  }

  /** [upper bound, observations at or below it] per bucket, cumulative, ending with [Infinity, count]. */
  cumulative(): Array<[number, number]> {
    let acc = 0;
    const out = this.upperBounds.map((le, i): [number, number] => [le, (acc += this.counts[i]!)]);
    out.push([Infinity, this.count]);
    return out;
  }

  private get() {
    const bucket = `${this.name}_bucket`;
    let acc = 0;
    const values: Array<{ labels: Record<string, string | number>; value: number; metricName: string }> = this.upperBounds.map((le, i) => {
      acc += this.counts[i]!;
      return { labels: { le }, value: acc, metricName: bucket };
    });
    values.push(
      { labels: { le: '+Inf' }, value: this.count, metricName: bucket },
      { labels: {}, value: this.sum, metricName: `${this.name}_sum` },
      { labels: {}, value: this.count, metricName: `${this.name}_count` },
    );
    return { name: this.name, help: this.help, type: 'histogram', aggregator: 'sum', values };
  }
}
