// Reads back the Prometheus text exposition that Metrics.render() produces, for the console's
// sampler: under `serve --workers N` that text is the only cluster-wide view (the primary sums the
// workers' registries and answers with text). It reads our own output, one sample per line:
// `name{label="value",…} number`; comments and timestamps are skipped.

export interface Series {
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
const unescape = (v: string) => v.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));

/** The samples of the named series (a histogram's are `<name>_bucket`, `_sum`, `_count`). */
export function readExposition(text: string, names: ReadonlySet<string>): Map<string, Series[]> {
  const out = new Map<string, Series[]>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = LINE.exec(line);
    if (m === null || !names.has(m[1]!)) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(LABEL)) labels[l[1]!] = unescape(l[2]!);
    const value = Number(m[3]);
    if (Number.isNaN(value)) continue;
    let list = out.get(m[1]!);
    if (list === undefined) out.set(m[1]!, (list = []));
    list.push({ labels, value });
  }
  return out;
}
