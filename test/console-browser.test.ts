// The console end to end in headless Chromium (Debian's `chromium`, driven by playwright-core):
// a wrong token is refused, the right one opens the campaigns, the create form shows the API's
// problem beside the field at fault, a created campaign is watched live while a real stampede
// sells it out — the counter reaches the stock and the status turns SOLD OUT — and the
// operations view shows the stores' readiness; with Redis, the reconcile status is there on
// opening and its dead letters are replayed and discarded from the page (a discarded one listed
// without buttons). At 1280 px (and 1920) the campaigns table fits without a horizontal scroll,
// every time is on a 24-hour clock in the browser's zone (Asia/Seoul here, under an en-US locale
// whose default clock is 12-hour) and the page names that zone, and the charts list only the
// series the mode has. Screenshots go to test-results/console/ (the README's picture is
// campaign-sold-out.png). Needs the built console (`npm run build`).
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { after, before, describe, it, type TestContext } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { CONSOLE_ASSETS } from '../src/routes/console.js';
import { ADMIN_TOKEN, issuedRows, missing, needDatabase, needServer, refuseInsertsOf, request, startTestServer, type TestServer } from './helpers.js';
import { issueAll, REDIS_URL, startRedisTestServer, usersRange, waitFor, waitForDrain, withStatus, type RedisTestServer } from './redis-helpers.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const SHOTS = new URL('../test-results/console/', import.meta.url);
/** The flags this machine's headless Chromium needs (no sandbox as root, no calls home). */
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

function canRun(t: TestContext): boolean {
  if (!existsSync(CHROMIUM)) {
    missing(t, `Chromium is not at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`);
    return false;
  }
  if (!existsSync(`${CONSOLE_ASSETS}/app.js`)) {
    missing(t, `the console is not built (${CONSOLE_ASSETS}): run npm run build`);
    return false;
  }
  return true;
}

const shot = (page: Page, name: string) => page.screenshot({ path: new URL(`${name}.png`, SHOTS).pathname, fullPage: true });

/** A zone ahead of UTC with a locale whose default clock is 12-hour: the page must say 24-hour times in this zone. */
const BROWSER = { timezoneId: 'Asia/Seoul', locale: 'en-US' } as const;
const ZONE_NOTE = 'times in Asia/Seoul (UTC+9)';
const CLOCK = /^([01]\d|2[0-3]):[0-5]\d:[0-5]\d$/;

/** No 12-hour time anywhere in the page's text, and the header names the zone. */
async function assertTimes(page: Page, where: string): Promise<void> {
  const text = await page.locator('body').innerText();
  assert.doesNotMatch(text, /\d[ \u202f]?[AP]\.?M\b/i, `${where}: a 12-hour time`);
  assert.equal(await page.locator('[data-field="zone"]').innerText(), ZONE_NOTE, `${where}: the zone note`);
}

/** The legend of the chart titled `title`, one label per line. */
async function legend(page: Page, title: string): Promise<string[]> {
  const chart = page.locator('figure.chart').filter({ has: page.locator('figcaption', { hasText: new RegExp(`^${title}$`) }) });
  return (await chart.locator('.u-legend .u-label').allInnerTexts()).map((l) => l.trim());
}

/** How far the campaigns table overflows its box (> 0: a horizontal scroll). */
const campaignsOverflow = (page: Page) =>
  page.evaluate(() => {
    const box = document.querySelector('section[aria-labelledby="list-title"] .table-wrap')!;
    return box.scrollWidth - box.clientWidth;
  });

describe('the console in a browser', () => {
  let browser: Browser | undefined;
  let server: TestServer | undefined;
  before(() => mkdirSync(SHOTS, { recursive: true }));
  after(async () => {
    await browser?.close();
    await server?.close();
  });

  it('logs in, creates a campaign, and shows a stampede selling it out', async (t) => {
    if (!canRun(t)) return;
    server = await startTestServer({ db: 'pglite' });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, ...BROWSER });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    // The refusals this test provokes (403 wrong token, 400 invalid campaign) are logged by the browser too.
    page.on('console', (m) => m.type() === 'error' && !/status of (400|403)\b/.test(m.text()) && errors.push(m.text()));

    await page.goto(`${server.url}/console`);
    // A wrong token is refused, and nothing of the console shows.
    await page.getByLabel('Admin token').fill('not-the-admin-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'That token was refused (403 FORBIDDEN)' }).waitFor();
    assert.equal(await page.getByRole('link', { name: 'Operations' }).count(), 0);
    await shot(page, 'login-refused');

    await page.getByLabel('Admin token').fill(ADMIN_TOKEN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Create a campaign' }).waitFor();
    // The token lives in this tab's sessionStorage, not in a cookie or the URL.
    assert.equal(await page.evaluate(() => sessionStorage.getItem('couponrush.adminToken')), ADMIN_TOKEN);
    assert.deepEqual(await page.context().cookies(), []);
    assert.ok(!page.url().includes(ADMIN_TOKEN));

    // The API's refusal appears beside the field it concerns.
    await page.getByLabel('Name').fill('Chicken drop');
    await page.getByLabel('Stock (coupons to issue)').fill('300');
    const startValue = await page.getByLabel('Issue window opens').inputValue();
    assert.match(startValue, /^\d{4}-\d{2}-\d{2} ([01]\d|2[0-3]):[0-5]\d:[0-5]\d$/, 'the window fields are 24-hour too');
    await page.getByLabel('Issue window closes').fill(startValue);
    await page.getByRole('button', { name: 'Create campaign' }).click();
    const endError = page.locator('#e-issueEndsAt');
    await endError.waitFor();
    assert.match(await endError.innerText(), /issueEndsAt must be after issueStartsAt \(VALIDATION_FAILED\)/);
    assert.equal(await page.getByLabel('Issue window closes').getAttribute('aria-invalid'), 'true');
    await page.getByLabel('Stock (coupons to issue)').fill('0');
    await page.getByRole('button', { name: 'Create campaign' }).click();
    await page.locator('#e-totalQuantity').waitFor();
    assert.match(await page.locator('#e-totalQuantity').innerText(), /must be >= 1 \(VALIDATION_FAILED\)/);
    await shot(page, 'create-errors');

    await page.getByLabel('Stock (coupons to issue)').fill('1000');
    const later = await page.evaluate(() => {
      const d = new Date(Date.now() + 30 * 60_000);
      return new Date(d.getTime() - d.getTimezoneOffset() * 60_000).toISOString().slice(0, 19).replace('T', ' ');
    });
    await page.getByLabel('Issue window closes').fill(later);
    await page.getByRole('button', { name: 'Create campaign' }).click();
    await page.waitForURL(/#\/campaigns\/\d+$/);
    const couponId = Number(/#\/campaigns\/(\d+)$/.exec(page.url())![1]);
    await page.getByRole('status').filter({ hasText: 'live, every second' }).waitFor();
    assert.equal(await page.locator('[data-field="remaining"]').innerText(), '1,000');

    // Four waves of 700 new users a second apart: the first takes 700, the second sells out, the
    // rest are refused — the charts get a shape, and every answer is recorded.
    const answers = new Map<string, number>();
    for (let wave = 0; wave < 4; wave++) {
      for (const [user, status] of await issueAll(server, couponId, usersRange(wave * 700, (wave + 1) * 700, 'fan'))) answers.set(user, status);
      await page.waitForTimeout(1_000);
    }
    const rows = await issuedRows(server.db, couponId);
    assert.equal(rows.rows, 1000);
    assert.deepEqual(new Set(withStatus(answers, 201)), new Set(rows.users), 'every 201 has its row, and no row lacks one');

    await page.locator('[data-field="status"]').filter({ hasText: 'SOLD OUT' }).waitFor({ timeout: 15_000 });
    await page.locator('[data-field="persisted"]').filter({ hasText: /^1,000\s*\/\s*1,000$/ }).waitFor({ timeout: 15_000 });
    assert.equal(await page.locator('[data-field="remaining"]').innerText(), '0');
    await shot(page, 'campaign-sold-out');
    assert.match(await page.locator('[data-field="sold-out-at"]').innerText(), CLOCK);
    await assertTimes(page, 'a campaign live');
    // Without Redis there is no stream: the queue chart has the backlog only.
    assert.deepEqual(await legend(page, 'Queue'), ['backlog (admitted − rows)']);
    assert.deepEqual(await legend(page, 'Issued vs stock'), ['admitted', 'rows persisted', 'stock']);

    // Beside it, campaigns as a real list has them: a long name on the longest strategy name this
    // mode runs, a window over midnight, one upcoming.
    const info = (await request(server.url, 'GET', '/admin/console/info', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json as { strategies: Array<{ name: string; unavailable: string | null }> };
    const longest = info.strategies.filter((s) => s.unavailable === null).reduce((a, b) => (b.name.length > a.name.length ? b : a)).name;
    const hour = 3600_000;
    await server.createCoupon({ name: 'Friday lunch: fried chicken for new members, 50% off', strategy: longest, totalQuantity: 250_000 });
    await server.createCoupon({ name: 'Overnight drop', issueStartsAt: new Date(Date.now() + hour).toISOString(), issueEndsAt: new Date(Date.now() + 26 * hour).toISOString() });

    // The list agrees, fits 1280 px (and 1920) without a horizontal scroll, and the operations view reads the stores.
    await page.getByRole('link', { name: 'Campaigns', exact: true }).click();
    const row = page.locator(`tr[data-coupon="${couponId}"]`);
    await row.locator('[data-field="issued"]').filter({ hasText: '1,000' }).waitFor();
    assert.match(await row.innerText(), /SOLD OUT/);
    await page.getByRole('link', { name: /Overnight drop/ }).waitFor();
    assert.match(await row.locator('td.window').innerText(), /^\S+ \d+ ([01]\d|2[0-3]):[0-5]\d – ([01]\d|2[0-3]):[0-5]\d$/);
    await assertTimes(page, 'the campaigns');
    assert.ok((await campaignsOverflow(page)) <= 0, `the campaigns table scrolls ${await campaignsOverflow(page)}px sideways at 1280 px`);
    await shot(page, 'campaigns');
    await page.setViewportSize({ width: 1920, height: 900 });
    assert.ok((await campaignsOverflow(page)) <= 0, `the campaigns table scrolls ${await campaignsOverflow(page)}px sideways at 1920 px`);
    await shot(page, 'campaigns-1920');
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.getByRole('link', { name: 'Operations' }).click();
    await page.locator('[data-store="database"]').filter({ hasText: 'database: ok' }).waitFor();
    await assertTimes(page, 'operations');
    await shot(page, 'operations');

    // Readable on a phone: nothing wider than the screen.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(`${server.url}/console/#/campaigns/${couponId}`);
    await page.locator('[data-field="status"]').filter({ hasText: 'SOLD OUT' }).waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than a phone screen`);
    await shot(page, 'campaign-phone');

    assert.deepEqual(errors, [], 'no script error in the page');
  });
});

describe('the console in a browser: dead letters (PostgreSQL, Redis)', () => {
  let browser: Browser | undefined;
  let server: RedisTestServer | undefined;
  const fixes: Array<() => Promise<void>> = [];
  before(() => mkdirSync(SHOTS, { recursive: true }));
  after(async () => {
    for (const fix of fixes.splice(0)) await fix();
    await browser?.close();
    await server?.close();
  });

  it('replays one held dead letter and discards another, which stays listed without buttons', async (t) => {
    if (!canRun(t) || !(await needDatabase(t, 'postgres')) || !(await needServer(t, 'Redis', REDIS_URL))) return;
    server = await startRedisTestServer();
    const { id } = await server.createCoupon({ totalQuantity: 5, strategy: 'redis-lua-async' });
    fixes.push(await refuseInsertsOf(server.db, 'victim-a', 'refused for the test'), await refuseInsertsOf(server.db, 'victim-b', 'refused for the test'));
    await server.startWorker('w1');
    assert.deepEqual(withStatus(await issueAll(server, id, ['victim-a', 'victim-b']), 202).sort(), ['victim-a', 'victim-b']);
    type Letter = { id: string; entry: Record<string, string> };
    let letters: Letter[] = [];
    await waitFor('two dead letters', async () => {
      letters = ((await request(server!.url, 'GET', `/admin/dead-letters?couponId=${id}`, { headers: server!.adminHeaders })).json as { items: Letter[] }).items;
      return letters.length === 2;
    });
    const a = letters.find((d) => d.entry.u === 'victim-a')!;
    const b = letters.find((d) => d.entry.u === 'victim-b')!;
    for (const fix of fixes.splice(0)) await fix();

    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, ...BROWSER });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    await page.goto(`${server.url}/console`);
    await page.getByLabel('Admin token').fill(ADMIN_TOKEN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('link', { name: 'Operations' }).click();
    // The reconcile status is read once on opening, without a click.
    await page.locator('section[aria-labelledby="rec-title"] tbody tr').filter({ hasText: `#${id}` }).waitFor();
    await assertTimes(page, 'operations with Redis');
    const replayA = page.getByRole('button', { name: `Replay dead letter ${a.id} of campaign ${id}` });
    await replayA.waitFor();
    assert.equal(await page.getByRole('button', { name: `Discard dead letter ${a.id} of campaign ${id}` }).count(), 1, 'a held one has both buttons');
    await shot(page, 'dead-letters-held');

    await replayA.click();
    await page.getByRole('status').filter({ hasText: `Replayed 1 of campaign #${id}.` }).waitFor();
    page.once('dialog', (d) => void d.accept());
    await page.getByRole('button', { name: `Discard dead letter ${b.id} of campaign ${id}` }).click();
    await page.getByRole('status').filter({ hasText: `Discarded 1 (1 seat given back) of campaign #${id}.` }).waitFor();
    const discarded = page.getByRole('table', { name: 'Discarded' });
    await discarded.getByRole('cell', { name: 'victim-b', exact: true }).waitFor();
    assert.equal(await discarded.getByRole('button').count(), 0, 'a discarded one has no buttons');
    assert.equal(await page.getByRole('table', { name: 'Held' }).count(), 0, 'nothing is held any more');
    await shot(page, 'dead-letters-settled');

    await waitForDrain(server, id, 1);
    assert.deepEqual((await issuedRows(server.db, id)).users, ['victim-a'], 'the replayed one is a row, the discarded one not');

    // A campaign with a Redis stream: the queue chart has its lag and dead letters too.
    await page.goto(`${server.url}/console/#/campaigns/${id}`);
    await page.getByRole('status').filter({ hasText: 'live, every second' }).waitFor();
    await page.locator('figure.chart .u-legend').filter({ hasText: 'stream lag' }).waitFor();
    assert.deepEqual(await legend(page, 'Queue'), ['backlog (admitted − rows)', 'stream lag', 'dead letters']);
    await assertTimes(page, 'a queued campaign live');
    await shot(page, 'campaign-queued');
    assert.equal(await server.redis.client.hget(server.redis.keys.campaign(id).state, 'issued'), '1', 'the discarded seat was given back');
    assert.deepEqual(errors, [], 'no script error in the page');
  });
});
