#!/usr/bin/env node
// Entry point of the `couponrush` bin: runs the compiled CLI (built by `npm install` via `prepare`).
import { existsSync } from 'node:fs';
const cli = new URL('../dist/cli.js', import.meta.url);
if (!existsSync(cli)) {
  console.error('couponrush: dist/ is missing — run `npm install` (or `npm run build`) first.');
  process.exit(1);
}
await import(cli.href);
