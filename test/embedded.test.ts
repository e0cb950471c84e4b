// The newcomer's path: `couponrush serve` with no environment starts on embedded PostgreSQL,
// migrates, prints the URL, docs, admin token and a curl that really issues a coupon. With
// REDIS_URL (the README's Redis quickstart) the worker runs in that process: a 202 becomes a row.
// That case needs Redis.
import assert from 'node:assert/strict';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { needServer, request } from './helpers.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from './redis-helpers.js';

const CLI = ['--import', 'tsx', 'src/cli.ts'];

describe('embedded mode (no DATABASE_URL)', () => {
  it('starts, prints a working curl, and keeps data across restarts', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'couponrush-embedded-'));
    const env = { PATH: process.env.PATH ?? '', DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: 'warn' };
    const start = () => {
      const child = spawn(process.execPath, [...CLI, 'serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      const banner = new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no banner within 60 s:\n${out}`)), 60_000);
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (/Create a campaign:[\s\S]*-d '/.test(out)) {
            clearTimeout(timer);
            resolve(out);
          }
        });
        child.stderr.on('data', (d: Buffer) => (out += d.toString()));
        child.on('exit', (code) => reject(new Error(`serve exited with ${code}:\n${out}`)));
      });
      const stop = () =>
        child.exitCode !== null || child.signalCode !== null
          ? Promise.resolve(child.exitCode)
          : new Promise<number | null>((resolve) => {
              child.removeAllListeners('exit');
              child.on('exit', (code) => resolve(code));
              child.kill('SIGTERM');
            });
      return { banner, stop };
    };

    let running: ReturnType<typeof start> | undefined;
    try {
      const first = (running = start());
      const banner = await first.banner;
      const url = /listening on (http:\/\/\S+)/.exec(banner)?.[1];
      assert.ok(url, 'the banner shows the URL');
      assert.match(banner, new RegExp(`API docs\\s+${url}/docs`));
      const adminToken = /Admin token\s+(\S+)/.exec(banner)?.[1];
      assert.ok(adminToken, 'the banner shows the generated admin token');

      // The printed issue curl, run as printed.
      const curl = /curl -i -X POST (\S+\/coupons\/(\d+)\/issues) -H "authorization: Bearer (\S+)"/.exec(banner);
      assert.ok(curl, 'the banner shows a curl that issues a coupon');
      const issued = await request(curl[1]!, 'POST', '', { headers: { authorization: `Bearer ${curl[3]}` } });
      assert.equal(issued.status, 201, issued.text);
      assert.equal((issued.json as { userId: string }).userId, 'demo-user');

      // `couponrush token` mints a token the server accepts (same dev secret from DATA_DIR).
      const token = execFileSync(process.execPath, [...CLI, 'token', 'newcomer'], { env }).toString().trim();
      const second = await request(url, 'POST', `/coupons/${curl[2]}/issues`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(second.status, 201, second.text);

      // From another directory (no DATA_DIR) it does not make up secrets the server would refuse:
      // it says where it looked, and creates nothing there.
      const elsewhere = mkdtempSync(join(tmpdir(), 'couponrush-elsewhere-'));
      try {
        const lost = spawnSync(process.execPath, ['--import', import.meta.resolve('tsx'), join(process.cwd(), 'src/cli.ts'), 'token', 'newcomer'], {
          cwd: elsewhere,
          env: { PATH: env.PATH },
          encoding: 'utf8',
        });
        assert.equal(lost.status, 2, lost.stderr);
        assert.match(lost.stderr, new RegExp(`no embedded secrets at ${join(elsewhere, '.couponrush', 'secrets.json').replace(/[.]/g, '\\.')}`));
        assert.equal(existsSync(join(elsewhere, '.couponrush')), false, 'nothing created there');
      } finally {
        rmSync(elsewhere, { recursive: true, force: true });
      }

      // The admin token works for creating campaigns.
      const created = await request(url, 'POST', '/admin/coupons', {
        headers: { authorization: `Bearer ${adminToken}` },
        json: { name: 'x', totalQuantity: 1, issueStartsAt: new Date().toISOString(), issueEndsAt: new Date(Date.now() + 60_000).toISOString() },
      });
      assert.equal(created.status, 201, created.text);
      assert.equal(await first.stop(), 0, 'SIGTERM exits cleanly');

      // Restart on the same data directory: the issuance is still there, same secrets.
      const again = (running = start());
      const banner2 = await again.banner;
      const url2 = /listening on (http:\/\/\S+)/.exec(banner2)?.[1]!;
      const me = await request(url2, 'GET', `/coupons/${curl[2]}/issues/me`, { headers: { authorization: `Bearer ${token}` } });
      assert.deepEqual(me.json, { status: 'ISSUED' });
      const dup = await request(url2, 'POST', `/coupons/${curl[2]}/issues`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(dup.status, 409, 'the rebuilt in-memory gate remembers the holder');
      assert.equal(await again.stop(), 0);
    } finally {
      await running?.stop(); // also after a failed assertion: a server left running keeps the test alive
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('with REDIS_URL runs the worker in the same process: the banner says so, and the pasted curl\'s 202 becomes ISSUED', async (t: TestContext) => {
    if (!(await needServer(t, 'Redis', REDIS_URL))) return;
    const dataDir = mkdtempSync(join(tmpdir(), 'couponrush-embedded-redis-'));
    const prefix = uniquePrefix();
    const env = { PATH: process.env.PATH ?? '', DATA_DIR: dataDir, PORT: '0', REDIS_URL, REDIS_PREFIX: prefix };
    const child = spawn(process.execPath, [...CLI, 'serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const deadline = Date.now() + 60_000;
      while (!/Create a campaign:[\s\S]*-d '/.test(out)) {
        if (Date.now() > deadline || child.exitCode !== null) throw new Error(`no banner:\n${out}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.match(out, /default strategy redis-lua-async-cached/);
      assert.match(out, /Worker\s+in this process/, 'the banner says who persists the 202s');
      assert.match(out, /"msg":"embedded database with REDIS_URL: the stream worker runs in this process/, 'and the log says so');
      const curl = /curl -i -X POST (\S+)\/coupons\/(\d+)\/issues -H "authorization: Bearer (\S+)"/.exec(out);
      assert.ok(curl, `an issue curl in:\n${out}`);
      const auth = { authorization: `Bearer ${curl[3]}` };
      const issued = await request(curl[1]!, 'POST', `/coupons/${curl[2]}/issues`, { headers: auth });
      assert.equal(issued.status, 202, issued.text);
      let status = '';
      for (const until = Date.now() + 10_000; status !== 'ISSUED' && Date.now() < until; await new Promise((r) => setTimeout(r, 100))) {
        status = ((await request(curl[1]!, 'GET', `/coupons/${curl[2]}/issues/me`, { headers: auth })).json as { status: string }).status;
      }
      assert.equal(status, 'ISSUED', 'the in-process worker persisted it');
      const coupon = (await request(curl[1]!, 'GET', `/coupons/${curl[2]}`)).json as { issuedCount: number };
      assert.equal(coupon.issuedCount, 1, 'a row in the embedded database');
      child.kill('SIGTERM');
      assert.equal(await exited, 0, out);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      rmSync(dataDir, { recursive: true, force: true });
      await deleteKeys(prefix);
    }
  });
});
