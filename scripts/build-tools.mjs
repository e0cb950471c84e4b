// Bundles the development tools that run from an installed package into dist/tools/ (no tsx
// needed): the Kafka broker of `couponrush-kafka` (scripts/kafka-broker.ts) and the Maven file it
// fetches the broker's jars with. Run by `npm run build` (and so by `npm install`).
import { copyFile, mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('../', import.meta.url));
const out = `${root}dist/tools`;
await mkdir(`${out}/kafka`, { recursive: true });
await build({
  entryPoints: { 'kafka-broker': `${root}scripts/kafka-broker.ts` },
  outdir: out,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  logLevel: 'warning',
});
await copyFile(`${root}scripts/kafka/pom.xml`, `${out}/kafka/pom.xml`);
