// The Node.js versions the project declares (package.json `engines`) are the ones every installed
// package supports: `npm install` on the oldest of them prints no EBADENGINE warning. The floor is
// the Kafka client's (@platformatic/kafka 1.22.0, pinned: docs/performance.md, "Choosing a Kafka
// client"); packages that wanted a newer Node are pinned by `overrides` in package.json. The
// README's requirements and DEVELOPERS.md state that same floor.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import semver from 'semver';

const root = new URL('../', import.meta.url);
const json = (file: string) => JSON.parse(readFileSync(new URL(file, root), 'utf8')) as Record<string, unknown>;

describe('engines', () => {
  it('every package in the lock file runs on the oldest Node.js that package.json declares', () => {
    const declared = (json('package.json').engines as { node?: string } | undefined)?.node;
    assert.ok(declared !== undefined, 'package.json declares engines.node');
    const floor = semver.minVersion(declared);
    assert.ok(floor !== null, `engines.node "${declared}" has a lowest version`);
    const packages = json('package-lock.json').packages as Record<string, { engines?: { node?: string } | string[] }>;
    const refused = Object.entries(packages)
      .filter(([name]) => name !== '')
      .flatMap(([name, p]) => {
        const range = Array.isArray(p.engines) ? undefined : p.engines?.node;
        return range === undefined || semver.satisfies(floor, range) ? [] : [`${name.replace(/^node_modules\//, '')} wants node ${range}`];
      });
    assert.deepEqual(refused, [], `Node.js ${floor.version} (the floor of "${declared}", the Kafka client's: docs/performance.md, "Choosing a Kafka client") is refused by`);
  });

  it('the README and DEVELOPERS.md state the declared floor', () => {
    const declared = (json('package.json').engines as { node: string }).node;
    const floor = semver.minVersion(declared)!.version;
    for (const doc of ['README.md', 'DEVELOPERS.md']) {
      const text = readFileSync(new URL(doc, root), 'utf8');
      assert.ok(text.includes(`Node.js ${floor} or newer`) || text.includes(`Node ≥ ${floor}`), `${doc} names Node ${floor} (package.json engines "${declared}")`);
      assert.doesNotMatch(text, /Node(\.js)? (≥ ?20\b(?!\.)|20 or newer)/, `${doc} promises no older Node`);
    }
  });

  it('the running Node.js is within the declared range', () => {
    const declared = (json('package.json').engines as { node: string }).node;
    assert.ok(semver.satisfies(process.versions.node, declared), `${process.versions.node} is not ${declared}`);
  });
});
