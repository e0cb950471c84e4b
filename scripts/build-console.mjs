// Builds the console's front end (console/) into dist/public/console (or the directory given as
// the first argument): one bundle of Preact, uPlot and our code, one stylesheet, the page. Run by
// `npm run build` (and so by `npm install`); the API serves the result from the package, so
// nothing is fetched from a CDN at run time.
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('../', import.meta.url));
const out = process.argv[2] ?? `${root}dist/public/console`;
await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
await build({
  entryPoints: { app: `${root}console/src/main.tsx` },
  outdir: out,
  bundle: true,
  format: 'esm',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  minify: true,
  sourcemap: true,
  legalComments: 'linked',
  logLevel: 'warning',
});
await copyFile(`${root}console/index.html`, `${out}/index.html`);
