// The Docker image's runtime stage, replayed on this machine (there is no Docker engine here):
// production dependencies only (`npm ci --omit=dev --ignore-scripts`, as in the Dockerfile), the
// compiled dist/, bin/, migrations/ and lua/ — then the real commands run from that directory:
// migrate, serve (with Redis and the admin port), worker, and a clean SIGTERM. A runtime import of
// a dev dependency, or a file the image forgets to copy, fails here.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { ADMIN_TOKEN, createTestDatabase, JWT_SECRET, needServer, PG_ADMIN_URL, request, type TestDatabase } from './helpers.js';
import { freePort, waitFor } from './ops-helpers.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from './redis-helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): { status: number | null; output: string } {
  const res = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout: 240_000 });
  return { status: res.status, output: `${res.stdout ?? ''}${res.stderr ?? ''}` };
}

describe('the image runtime stage (replayed without Docker)', () => {
  let app: string;
  before(() => {
    app = mkdtempSync(join(tmpdir(), 'couponrush-image-'));
    for (const f of ['package.json', 'package-lock.json']) cpSync(join(ROOT, f), join(app, f));
    // The Dockerfile's runtime stage, step for step (the npm cache makes it an offline install).
    const install = run('npm', ['ci', '--omit=dev', '--workspaces=false', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline'], app);
    assert.equal(install.status, 0, install.output);
    // The build stage's output: dist/ compiled from src/ with the project's build config.
    const build = run(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', join(app, 'dist')], ROOT);
    assert.equal(build.status, 0, build.output);
    const consoleBuild = run(process.execPath, [join(ROOT, 'scripts/build-console.mjs'), join(app, 'dist/public/console')], ROOT);
    assert.equal(consoleBuild.status, 0, consoleBuild.output);
    for (const dir of ['bin', 'migrations', 'lua']) cpSync(join(ROOT, dir), join(app, dir), { recursive: true });
  });
  after(() => rmSync(app, { recursive: true, force: true }));

  it('has no dev dependency installed', () => {
    // Not @types/node: mysql2 declares it a peer dependency, which npm installs with production ones.
    for (const dev of ['typescript', 'tsx', 'esbuild', '@types/pg', '@types/semver']) assert.ok(!existsSync(join(app, 'node_modules', dev)), `${dev} is a dev dependency`);
    assert.ok(existsSync(join(app, 'node_modules', 'fastify')));
  });

  it("carries none of the bench's dependencies, and `couponrush bench` says in one line how to get it", () => {
    const bench = JSON.parse(readFileSync(join(ROOT, 'bench', 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    const deps = Object.keys(bench.dependencies);
    assert.ok(deps.includes('autocannon') && deps.includes('vega'), 'the bench package declares its own dependencies');
    for (const dep of deps) assert.ok(!existsSync(join(app, 'node_modules', dep)), `${dep} is the bench's, not the service's`);
    const res = run(process.execPath, ['bin/couponrush.js', 'bench', '--strategies', 'local'], app);
    assert.equal(res.status, 2, res.output);
    const lines = res.output.trim().split('\n');
    assert.equal(lines.length, 1, res.output);
    assert.match(lines[0]!, /^couponrush bench: the bench is not installed here .*npm install/);
  });

  describe('with PostgreSQL and Redis', () => {
    let testDb: TestDatabase | undefined;
    const prefix = uniquePrefix();
    after(async () => {
      await testDb?.drop();
      await deleteKeys(prefix);
    });

    it('migrates, serves (API, admin port, /readyz with Redis), runs a worker, and exits 0 on SIGTERM', async (t) => {
      if (!(await needServer(t, 'PostgreSQL', PG_ADMIN_URL)) || !(await needServer(t, 'Redis', REDIS_URL))) return;
      testDb = await createTestDatabase();
      const [port, adminPort, workerPort] = [await freePort(), await freePort(), await freePort()];
      const env = {
        PATH: process.env.PATH ?? '',
        NODE_ENV: 'production',
        DATABASE_URL: testDb.url,
        REDIS_URL,
        REDIS_PREFIX: prefix,
        ADMIN_TOKEN,
        JWT_SECRET,
        HOST: '127.0.0.1',
        LOG_LEVEL: 'warn',
      };
      const migrate = run(process.execPath, ['bin/couponrush.js', 'migrate'], app, env);
      assert.equal(migrate.status, 0, migrate.output);

      const start = (args: string[], extra: Record<string, string>) => {
        const child = spawn(process.execPath, ['bin/couponrush.js', ...args], { cwd: app, env: { ...env, ...extra }, stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        child.stdout.on('data', (c: Buffer) => (out += c.toString()));
        child.stderr.on('data', (c: Buffer) => (out += c.toString()));
        const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
        return { child, exited, output: () => out };
      };
      const api = start(['serve'], { PORT: String(port), ADMIN_PORT: String(adminPort) });
      const worker = start(['worker', '--consumer', 'image-test'], { ADMIN_PORT: String(workerPort) });
      try {
        await waitFor('the API to be ready', async () => (await request(`http://127.0.0.1:${port}`, 'GET', '/readyz')).status === 200, 30_000).catch((err: Error) => {
          throw new Error(`${err.message}\n${api.output()}`);
        });
        const ready = await request(`http://127.0.0.1:${port}`, 'GET', '/readyz');
        assert.deepEqual(ready.json, { status: 'ready', database: 'ok', redis: 'ok' });
        assert.equal((await request(`http://127.0.0.1:${adminPort}`, 'GET', '/metrics')).status, 200);
        // The console is served from the package, on the admin port only.
        const page = await request(`http://127.0.0.1:${adminPort}`, 'GET', '/console/');
        assert.equal(page.status, 200);
        assert.match(page.text, /<script type="module" src="app\.js"><\/script>/);
        assert.equal((await request(`http://127.0.0.1:${adminPort}`, 'GET', '/console/app.js')).status, 200);
        assert.equal((await request(`http://127.0.0.1:${port}`, 'GET', '/console/')).status, 404);
        await waitFor('the worker to serve /healthz', async () => (await request(`http://127.0.0.1:${workerPort}`, 'GET', '/healthz')).status === 200, 30_000).catch(
          (err: Error) => {
            throw new Error(`${err.message}\n${worker.output()}`);
          },
        );
        const workerMetrics = (await request(`http://127.0.0.1:${workerPort}`, 'GET', '/metrics')).text;
        assert.match(workerMetrics, /couponrush_worker_rows_written_total/);
        assert.match(workerMetrics, /^couponrush_ready\{store="database"\} 1$/m, 'the worker says which stores answer it (CouponrushNotReady)');
        assert.match(workerMetrics, /^couponrush_ready\{store="redis"\} 1$/m);
      } finally {
        api.child.kill('SIGTERM');
        worker.child.kill('SIGTERM');
      }
      assert.equal(await api.exited, 0, api.output());
      assert.equal(await worker.exited, 0, worker.output());
    });
  });
});
