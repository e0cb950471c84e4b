// The shape of src/ that docs/architecture.md promises, checked on the import graph itself: no
// import cycle, imports flow downhill (the stores' adapters and the shared utilities never import
// the layers built on them), SQL on the coupon tables only in its repository, and the environment
// read by config.ts alone.
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

  it('imports flow downhill: the stores and the utilities never import what is built on them', () => {
    // Each prefix may import only from these prefixes (besides itself).
    const allowed: Record<string, readonly string[]> = {
      'util/': [],
      'db/': ['util/'],
      'coupons/sql/': ['db/', 'coupons/domain.ts'],
      'coupons/repository.ts': ['db/', 'coupons/domain.ts', 'coupons/sql/'],
      'redis/': ['util/', 'coupons/domain.ts'],
      'kafka/': ['util/'],
      'worker/': ['util/', 'config.ts', 'db/', 'redis/', 'kafka/', 'coupons/domain.ts', 'coupons/repository.ts', 'coupons/sql/', 'coupons/queued-admission.ts'],
    };
    const wrong: string[] = [];
    for (const [file, deps] of graph) {
      const layer = Object.keys(allowed).find((p) => file.startsWith(p));
      if (layer === undefined) continue;
      for (const d of deps) {
        if (d.startsWith(layer)) continue;
        if (!allowed[layer]!.some((p) => d.startsWith(p))) wrong.push(`${file} → ${d}`);
      }
    }
    assert.deepEqual(wrong, []);
  });

  it('writes SQL on the coupon tables only in the repository (the bench, a tool beside src/, checks rows itself)', () => {
    const sqlOnCoupons = /\b(?:FROM|INTO|UPDATE|JOIN)\s+(?:coupons|coupon_issues)\b/;
    const outside = files.filter((f) => !f.startsWith('coupons/sql/') && sqlOnCoupons.test(text.get(f)!.replace(/^\s*(\/\/|\*).*$/gm, '')));
    assert.deepEqual(outside, []);
  });

  it('reads the environment in config.ts only', () => {
    const readers = files.filter((f) => f !== 'config.ts' && /process\.env\b/.test(text.get(f)!.replace(/^\s*(\/\/|\*).*$/gm, '')));
    assert.deepEqual(readers, []);
  });
});
