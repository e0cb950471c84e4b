#!/usr/bin/env node
// Entry point of the `couponrush-kafka` bin: a real Apache Kafka broker on this machine for trying
// redis-lua-kafka (needs a JDK 17+ and Maven; see the README's Kafka quickstart). Runs the bundle
// `npm run build` makes of scripts/kafka-broker.ts.
import { existsSync } from 'node:fs';
const tool = new URL('../dist/tools/kafka-broker.js', import.meta.url);
if (!existsSync(tool)) {
  console.error('couponrush-kafka: dist/ is missing — run `npm install` (or `npm run build`) first.');
  process.exit(1);
}
const { main } = await import(tool.href);
const code = await main(process.argv.slice(2));
if (code !== undefined) process.exit(code);
