// The shape of src/ that docs/architecture.md promises, checked on the import graph itself: no
// import cycle, every module in a named layer and every import downhill, no Fastify code below
// HTTP, every route in routes/, SQL on the coupon tables only in its repository, and the
// environment read by config.ts alone.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const SRC = fileURLToPath(new URL('../src/', import.meta.url));

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

const files = sourceFiles(SRC).map((f) => relative(SRC, f));
const text = new Map(files.map((f) => [f, readFileSync(join(SRC, f), 'utf8')]));

/** src-relative modules a file imports (`import …`/`export … from`, type-only ones included). */
function importsOf(file: string): string[] {
  const out: string[] = [];
  for (const m of text.get(file)!.matchAll(/^(?:import|export)\b[^'";]*?from\s+'(\.[^']+)'/gm)) {
    out.push(relative(SRC, resolve(dirname(join(SRC, file)), m[1]!.replace(/\.js$/, '.ts'))));
  }
  return out;
}

const graph = new Map(files.map((f) => [f, importsOf(f)]));

/**
 * The layers of src/, bottom first: a module may import its own layer and those below it, never
 * one above. A module belongs to the layer of the longest prefix that names it (a folder ending in
 * `/`, or a file). docs/architecture.md, "Layers", says the same in words.
 */
const LAYERS: ReadonlyArray<{ readonly name: string; readonly prefixes: readonly string[] }> = [
  { name: 'utilities', prefixes: ['util/'] },
  // Traces: what every layer above may start a span with (the SDK behind it is loaded only when on).
  { name: 'tracing', prefixes: ['tracing/'] },
  // What an id, an outcome and the issue route's path are: imported by every layer above, they
  // import nothing but the utilities (so Redis' script wrapper may map codes to outcomes).
  { name: "the domain's vocabulary", prefixes: ['coupons/ids.ts', 'coupons/domain.ts', 'coupons/paths.ts'] },
  { name: 'the database handle', prefixes: ['db/'] },
  { name: 'SQL', prefixes: ['coupons/sql/'] },
  { name: 'the repository', prefixes: ['coupons/repository.ts'] },
  { name: 'Kafka', prefixes: ['kafka/'] },
  { name: 'Redis', prefixes: ['redis/'] },
  // The service, the strategies, reconcile, the one validation of queued admissions.
  { name: 'the coupon domain', prefixes: ['coupons/'] },
  { name: 'configuration', prefixes: ['config.ts'] },
  { name: 'the workers', prefixes: ['worker/'] },
  // Metrics observe the domain and the workers through the observer interfaces those declare
  // (IssueObserver, WorkerObserver): above both, and the only layer that knows prom-client.
  { name: 'metrics', prefixes: ['metrics/'] },
  { name: "the console's sampler", prefixes: ['console/'] },
  // The server around the routes: problems, protections, auth, rate limits, the listeners.
  { name: 'HTTP', prefixes: ['http/'] },
  { name: 'routes', prefixes: ['routes/'] },
  { name: 'the runtime', prefixes: ['runtime.ts'] },
  { name: 'the app', prefixes: ['app.ts'] },
  { name: 'the server', prefixes: ['server.ts'] },
  { name: 'the cluster', prefixes: ['cluster.ts'] },
  { name: 'the command line', prefixes: ['cli.ts'] },
];

function layerOf(file: string): { readonly name: string; readonly rank: number } | undefined {
  let best: { name: string; rank: number; length: number } | undefined;
  LAYERS.forEach((layer, rank) => {
    for (const p of layer.prefixes) {
      if (file.startsWith(p) && (best === undefined || p.length > best.length)) best = { name: layer.name, rank, length: p.length };
    }
  });
  return best;
}

describe('the architecture of src/', () => {
  it('parses every import (the graph is not empty and names real files)', () => {
    const edges = [...graph.values()].flat();
    assert.ok(edges.length > 100, `only ${edges.length} imports found`);
    for (const [file, deps] of graph) for (const d of deps) assert.ok(text.has(d), `${file} imports ${d}, which is not a source file`);
  });

  it('has no import cycle', () => {
    const state = new Map<string, 'open' | 'done'>();
    const cycles: string[] = [];
    const visit = (f: string, path: string[]) => {
      if (state.get(f) === 'done') return;
      if (state.get(f) === 'open') {
        cycles.push([...path.slice(path.indexOf(f)), f].join(' → '));
        return;
      }
      state.set(f, 'open');
      for (const d of graph.get(f) ?? []) visit(d, [...path, f]);
      state.set(f, 'done');
    };
    for (const f of files) visit(f, []);
    assert.deepEqual(cycles, []);
  });

  it('names the layer of every module in src/', () => {
    assert.deepEqual(
      files.filter((f) => layerOf(f) === undefined),
      [],
      'a module in none of LAYERS: add its folder (or file) where it belongs',
    );
  });

  it('imports flow downhill: no module imports one of a layer above its own', () => {
    const uphill: string[] = [];
    for (const [file, deps] of graph) {
      const from = layerOf(file)!;
      for (const d of deps) {
        const to = layerOf(d)!;
        if (to.rank > from.rank) uphill.push(`${file} (${from.name}) → ${d} (${to.name})`);
      }
    }
    assert.deepEqual(uphill, []);
  });

  it('keeps Fastify to the HTTP floor: only http/, routes/ and the app and server that put them together import it', () => {
    const floor = (f: string) => f.startsWith('http/') || f.startsWith('routes/') || f === 'app.ts' || f === 'server.ts';
    const below = files.filter((f) => !floor(f) && /^(?:import|export)\b[^;]*?from\s+'(?:fastify|@fastify\/[^']+)'/m.test(text.get(f)!));
    assert.deepEqual(below, []);
  });

  it('adds every route in routes/ (app.ts registers the modules, nothing else adds one)', () => {
    const addsRoute = /\.(?:get|post|put|patch|delete|head|options|all)\(\s*['`]\/|\.route\(\s*\{/;
    const outside = files.filter((f) => !f.startsWith('routes/') && addsRoute.test(text.get(f)!.replace(/^\s*(\/\/|\*).*$/gm, '')));
    assert.deepEqual(outside, []);
  });

  it('writes SQL on the coupon tables only in the repository (the bench, a tool beside src/, checks rows itself)', () => {
    const sqlOnCoupons = /\b(?:FROM|INTO|UPDATE|JOIN)\s+(?:coupons|coupon_issues)\b/;
    const outside = files.filter((f) => !f.startsWith('coupons/sql/') && sqlOnCoupons.test(text.get(f)!.replace(/^\s*(\/\/|\*).*$/gm, '')));
    assert.deepEqual(outside, []);
  });

  it('keeps the bench beside the service: src/ never imports bench/ (cli.ts loads the package by name, at run time)', () => {
    const importers = files.filter((f) => /from\s+'[./]*\/bench\/|import\(\s*'[./]*\/bench\//.test(text.get(f)!));
    assert.deepEqual(importers, []);
  });

  it('reads the environment in config.ts only', () => {
    const readers = files.filter((f) => f !== 'config.ts' && /process\.env\b/.test(text.get(f)!.replace(/^\s*(\/\/|\*).*$/gm, '')));
    assert.deepEqual(readers, []);
  });
});
