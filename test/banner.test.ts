// Every command `couponrush serve` prints works when pasted into a shell: each curl of the banner
// is run as printed by `sh` — with ADMIN_TOKEN and JWT_SECRET in the environment on PostgreSQL, as
// a user who followed the README would have them — and must get its 201. A database whose
// campaigns are all sold out or ended gets the create-then-issue pair, and the banner writes
// nothing into it. Needs curl (and PostgreSQL for the PostgreSQL half).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { countCoupons, insertCoupon, issueAtOnce } from '../src/coupons/repository.js';
import { createPostgresDb } from '../src/db/index.js';
import { migrate } from '../src/db/migrate.js';
import { ADMIN_TOKEN, createTestDatabase, JWT_SECRET, missing, needServer, PG_ADMIN_URL } from './helpers.js';
import { freePort, runCli, waitFor } from './ops-helpers.js';

const hasCurl = () => spawnSync('sh', ['-c', 'command -v curl'], { encoding: 'utf8' }).status === 0;

/** The banner's shell commands: lines starting with `curl` or `COUPON_ID=`, with their `\`-continued lines. */
function printedCommands(banner: string): string[] {
  const commands: string[] = [];
  let current: string | undefined;
  for (const raw of banner.split('\n')) {
    const line = raw.trim();
    if (current === undefined && !line.startsWith('curl ') && !line.startsWith('COUPON_ID=')) continue;
    current = current === undefined ? line : `${current}\n${line}`;
    if (!line.endsWith('\\')) {
      commands.push(current);
      current = undefined;
    }
  }
  return commands;
}

async function bannerOf(env: Record<string, string>): Promise<{ banner: string; stop: () => Promise<unknown> }> {
  const child = runCli(['serve', '--migrate'], { HOST: '127.0.0.1', LOG_LEVEL: 'warn', ...env });
  try {
    // Complete once both commands and the blank line after the last one are out.
    await waitFor('the banner', () => /(Create a campaign|Issue a coupon)[\s\S]*(Create a campaign|Issue a coupon)[\s\S]*\n\n/.test(child.output()), 60_000);
  } catch (err) {
    child.proc.kill('SIGKILL');
    throw new Error(`${(err as Error).message}\n${child.output()}`);
  }
  return {
    banner: child.output(),
    stop: () => {
      child.proc.kill('SIGTERM');
      return child.exited;
    },
  };
}

function runAsPasted(command: string, env: Record<string, string>): string {
  const r = spawnSync('sh', ['-c', command], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '', ...env }, timeout: 20_000 });
  return `${r.stdout}${r.stderr}`;
}

describe('the commands couponrush serve prints', () => {
  it('embedded: the issue curl and the create-campaign curl both get 201 when pasted', async (t: TestContext) => {
    if (!hasCurl()) return missing(t, 'curl is not installed');
    const dataDir = mkdtempSync(join(tmpdir(), 'couponrush-banner-'));
    let server: Awaited<ReturnType<typeof bannerOf>> | undefined;
    try {
      server = await bannerOf({ DATA_DIR: dataDir, PORT: String(await freePort()) });
      const commands = printedCommands(server.banner);
      assert.equal(commands.length, 2, `two curls in:\n${server.banner}`);
      // The generated development secret: the token is printed as is, nothing to export.
      assert.match(server.banner, /Bearer eyJ/);
      for (const c of commands) assert.match(runAsPasted(c, {}), /^HTTP\/1\.1 201/m, c);
      // The console's address, opened as a browser would (following the redirect), is the page.
      const consoleUrl = /^\s*Console\s+(\S+)/m.exec(server.banner)?.[1];
      assert.ok(consoleUrl !== undefined, `a Console line in:\n${server.banner}`);
      const page = await fetch(consoleUrl);
      assert.equal(page.status, 200);
      assert.match(await page.text(), /<title>couponrush console<\/title>/);
    } finally {
      await server?.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('PostgreSQL, no open campaign: pasted in order, the commands create one (expanding $ADMIN_TOKEN) and issue from it', async (t: TestContext) => {
    if (!hasCurl()) return missing(t, 'curl is not installed');
    if (!(await needServer(t, 'PostgreSQL', PG_ADMIN_URL))) return;
    const db = await createTestDatabase();
    let server: Awaited<ReturnType<typeof bannerOf>> | undefined;
    try {
      server = await bannerOf({ DATABASE_URL: db.url, ADMIN_TOKEN, JWT_SECRET, PORT: String(await freePort()) });
      const commands = printedCommands(server.banner);
      assert.equal(commands.length, 2, `create, then issue, in:\n${server.banner}`);
      assert.match(commands[0]!, /\$ADMIN_TOKEN/, 'the token is not printed on PostgreSQL: the shell supplies it');
      // No credential signed with the configured secret in the output: the shell mints the user token.
      assert.match(commands[1]!, /Bearer \$\(npx couponrush token demo-user\)/);
      assert.doesNotMatch(server.banner, /eyJ/, 'no JWT in the banner');
      // One shell, in the printed order, as a user pastes them: only ADMIN_TOKEN and JWT_SECRET
      // exported, as the README has them (not DATABASE_URL: minting needs the secret alone).
      const out = runAsPasted(commands.join('\n'), { ADMIN_TOKEN, JWT_SECRET });
      assert.match(out, /^HTTP\/1\.1 201/m, `${commands.join('\n')}\n→\n${out}`);
      assert.match(out, /"status":"ISSUED"/);
    } finally {
      await server?.stop();
      await db.drop();
    }
  });

  it('PostgreSQL whose only campaigns are sold out or ended: the banner writes nothing and prints create-then-issue, which gets 201 ISSUED', async (t: TestContext) => {
    if (!hasCurl()) return missing(t, 'curl is not installed');
    if (!(await needServer(t, 'PostgreSQL', PG_ADMIN_URL))) return;
    const testDb = await createTestDatabase();
    const db = createPostgresDb(testDb.url, { poolSize: 2 });
    let server: Awaited<ReturnType<typeof bannerOf>> | undefined;
    try {
      await migrate(db);
      const now = Date.now();
      const campaign = (name: string, totalQuantity: number, startsAt: number, endsAt: number) =>
        insertCoupon(db, { name, totalQuantity, issueStartsAt: new Date(startsAt), issueEndsAt: new Date(endsAt), strategy: 'db-atomic', discountType: null, discountValue: null, minOrderAmount: null });
      const soldOut = await campaign('sold out', 1, now - 60_000, now + 3600_000);
      assert.equal(await issueAtOnce(db)!(db, soldOut.id, 'early-bird', new Date()), 'issued');
      await campaign('ended', 100, now - 7200_000, now - 3600_000);
      server = await bannerOf({ DATABASE_URL: testDb.url, ADMIN_TOKEN, JWT_SECRET, PORT: String(await freePort()) });
      assert.equal(await countCoupons(db), 2, 'the banner created no campaign in the user\'s database');
      const commands = printedCommands(server.banner);
      assert.equal(commands.length, 2, `create, then issue, in:\n${server.banner}`);
      assert.match(commands[0]!, /^COUPON_ID=/, 'the create command comes first');
      assert.doesNotMatch(commands[1]!, new RegExp(`/coupons/${soldOut.id}/issues`), 'not the sold-out campaign');
      const out = runAsPasted(commands.join('\n'), { ADMIN_TOKEN, JWT_SECRET });
      assert.match(out, /^HTTP\/1\.1 201/m, `${commands.join('\n')}\n→\n${out}`);
      assert.match(out, /"status":"ISSUED"/);
    } finally {
      await server?.stop();
      await db.close();
      await testDb.drop();
    }
  });

  it('PostgreSQL with an open campaign that has stock: the issue curl names it and gets 201', async (t: TestContext) => {
    if (!hasCurl()) return missing(t, 'curl is not installed');
    if (!(await needServer(t, 'PostgreSQL', PG_ADMIN_URL))) return;
    const testDb = await createTestDatabase();
    const db = createPostgresDb(testDb.url, { poolSize: 2 });
    let server: Awaited<ReturnType<typeof bannerOf>> | undefined;
    try {
      await migrate(db);
      const now = Date.now();
      const base = { issueStartsAt: new Date(now - 60_000), issueEndsAt: new Date(now + 3600_000), strategy: 'db-atomic', discountType: null, discountValue: null, minOrderAmount: null };
      // The older one sold out: the banner must not pick it for being first.
      const soldOut = await insertCoupon(db, { ...base, name: 'sold out', totalQuantity: 1 });
      assert.equal(await issueAtOnce(db)!(db, soldOut.id, 'early-bird', new Date()), 'issued');
      const open = await insertCoupon(db, { ...base, name: 'open', totalQuantity: 5 });
      server = await bannerOf({ DATABASE_URL: testDb.url, ADMIN_TOKEN, JWT_SECRET, PORT: String(await freePort()) });
      const issue = printedCommands(server.banner).find((c) => c.includes('/issues'));
      assert.ok(issue !== undefined, server.banner);
      assert.match(issue, new RegExp(`/coupons/${open.id}/issues`));
      const out = runAsPasted(issue, { ADMIN_TOKEN, JWT_SECRET });
      assert.match(out, /^HTTP\/1\.1 201/m, `${issue}\n→\n${out}`);
    } finally {
      await server?.stop();
      await db.close();
      await testDb.drop();
    }
  });
});
