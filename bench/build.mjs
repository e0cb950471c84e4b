// Bundles the bench (src/main.ts, and the ceiling server it starts as a process of its own) into
// dist/. The service modules it uses (configuration, strategy declarations, scratch databases, token
// signing) are bundled in from ../src; npm packages stay imports, resolved from the checkout's
// node_modules. Run by the service's `npm run build` (and so by `npm install`).
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const here = fileURLToPath(new URL('./', import.meta.url));
await build({
  entryPoints: { main: `${here}src/main.ts`, 'ceiling-server': `${here}src/ceiling-server.ts` },
  outdir: `${here}dist`,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  packages: 'external',
  sourcemap: true,
  logLevel: 'warning',
});
