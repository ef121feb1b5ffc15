import { mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Availability, Machine, Operation } from '../../src/control/wire.js';
import { type TestBrowser, buildDashboard, launchBrowser } from '../harness/browser.js';
import { type Cluster, startCluster, until } from '../harness/cluster.js';
import { makeImageTar, makeTestImage, skopeo } from '../harness/images.js';
import { type TestRegistry, startRegistry } from '../harness/registry.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * The dashboard in a real browser (Chromium through playwright-core) against a real cluster: stowd
 * control and three stowd agents as processes, a real registry. What a user sees and clicks: login, the
 * images × machines matrix following a distribute live, a preload started from the catalog and
 * followed to its end, an unload, a cancel, and a user refused what their role may not do.
 *
 * STOWAGE_DASHBOARD_SCREENSHOT=docs/dashboard.png also saves the matrix mid-distribute there (the
 * README's picture).
 */

/** Downloads are capped so a distribute lasts long enough to be seen moving. */
const RATE = 2 * 1024 * 1024;
const WAIT = { timeout: 90_000 };
/** A browser, a cluster and slowed transfers on a loaded 2-core machine: each test gets minutes. */
const TEST_TIMEOUT = 240_000;

let cluster: Cluster;
let reg: TestRegistry;
let browser: TestBrowser;
let page: Page;
let aliceToken: string;
let toolRef: string;

/** Logs in on the login form the page shows. */
async function login(token: string): Promise<void> {
  await page.getByLabel('API key').fill(token);
  await page.getByRole('button', { name: 'Log in' }).click();
}

async function open(tab: string): Promise<void> {
  await page.getByRole('link', { name: tab, exact: true }).click();
}

beforeAll(async () => {
  const webDir = await buildDashboard();
  reg = await startRegistry();
  const layout = await tmpDir('stowage-layout-');
  // A Backend.AI kernel image (the catalog records only those).
  await makeTestImage(layout, { layers: 1, layerBytes: 64 * 1024, tag: 'x', labels: { 'ai.backend.kernelspec': '1' } });
  toolRef = `${reg.host}/team/tool:1`;
  await skopeo(['copy', `oci:${layout}:x`, `docker://${toolRef}`]);
  cluster = await startCluster({
    agents: 3,
    maxTransferRate: RATE,
    labels: [{ zone: 'a' }, { zone: 'a' }, { zone: 'b' }],
    control: {
      webDir,
      seed: {
        registries: [{ name: reg.host, url: reg.url }],
        domains: [{ name: 'research', allowed_registries: [reg.host] }],
        users: [{ name: 'alice', role: 'user', domain: 'research' }],
      },
    },
  });
  aliceToken = (await readFile(join(cluster.root, 'control', 'tokens', 'alice.token'), 'utf8')).trim();
  browser = await launchBrowser();
  page = browser.page;
}, 240_000);

afterAll(async () => {
  await browser?.close();
  await cluster?.close();
  await reg?.stop();
});

describe('the web dashboard', () => {
  it('logs in with an API key, refuses a wrong one, and lists the machines', async () => {
    await page.goto(`${cluster.controlUrl}/ui/`);
    await login('stk_not-a-real-key');
    await page.getByRole('alert').filter({ hasText: 'UNAUTHORIZED' }).waitFor(WAIT);

    await login(cluster.adminToken);
    await page.getByTestId('whoami').filter({ hasText: 'admin (superadmin)' }).waitFor(WAIT);
    await open('Machines');
    for (const name of ['agent-1', 'agent-2', 'agent-3']) {
      await page.locator(`[data-testid="machine-${name}"][data-status="online"]`).waitFor(WAIT);
    }
    await expectText(page.getByTestId('machine-agent-3'), 'zone=b');
    // Disk use comes with heartbeats: shown once the agent has reported it.
    const reported = await until('agents to report disk use', async () => {
      const r = await cluster.api<{ machines: Machine[] }>('GET', '/api/v1/machines');
      return r.body.machines.every((m) => m.disk_used_bytes !== null) ? r.body.machines : undefined;
    });
    expect(reported.map((m) => m.id)).toEqual(['agent-1', 'agent-2', 'agent-3']);
    await page.getByTestId('machine-agent-1').getByTestId('disk-use').filter({ hasText: /\d/ }).waitFor(WAIT);
    await expectText(page.getByTestId('command').first(), 'stowctl machine list');
  }, TEST_TIMEOUT);

  it('rescans the catalog, runs a preload from it to the end and unloads', async () => {
    await open('Catalog');
    await page.getByLabel('registry').fill(reg.host);
    await expectText(page.getByTestId('rescan-form').getByTestId('command'), `stowctl catalog rescan ${reg.host}`);
    await page.getByRole('button', { name: 'Rescan' }).click();
    await page.locator('article.task[data-status="succeeded"]').filter({ hasText: 'rescan' }).waitFor(WAIT);
    // The line shown is one stowctl takes: run as shown, it rescans too.
    const line = (await page.getByTestId('rescan-form').getByTestId('command').locator('code').textContent()) ?? '';
    const shown = await cluster.stowctl(line.split(' ').slice(1));
    expect(shown.code, `${line}: ${shown.stderr}`).toBe(0);

    const row = page.getByTestId(`catalog-${toolRef}`);
    await row.waitFor(WAIT);
    await row.getByRole('button', { name: 'Select' }).click();
    await page.getByLabel('target agents').fill('label:zone=a');
    await expectText(page.getByTestId('preload-form').getByTestId('command'), `stowctl catalog preload ${toolRef} --agents label:zone=a`);
    await page.getByRole('button', { name: 'Preload' }).click();

    const task = page.locator('article.task').filter({ hasText: 'preload' });
    await task.locator('[data-testid="target-agent-1"]').waitFor(WAIT);
    await page.locator('article.task[data-status="succeeded"]').filter({ hasText: 'preload' }).waitFor(WAIT);
    await task.locator('[data-testid="target-agent-2"][data-status="present"]').waitFor(WAIT);
    await row.getByTestId('installed').filter({ hasText: 'agent-1, agent-2' }).waitFor(WAIT);
    expect(await task.locator('[data-testid="target-agent-3"]').count()).toBe(0);

    // Unload from one of them: its target ends absent and the catalog shows the image on the other only.
    await page.getByLabel('target agents').fill('agent-2');
    await page.getByRole('button', { name: 'Unload' }).click();
    const unload = page.locator('article.task').filter({ hasText: 'unload' });
    await unload.locator('[data-testid="target-agent-2"][data-status="absent"]').waitFor(WAIT);
    await page.locator('article.task[data-status="succeeded"]').filter({ hasText: 'unload' }).waitFor(WAIT);
    await row.getByTestId('installed').filter({ hasText: /^agent-1$/ }).waitFor(WAIT);
  }, TEST_TIMEOUT);

  it('shows a distribute live in the images × machines matrix: transferring, then present', async () => {
    const name = 'example.test/web/app:1.0';
    // 16 MiB at the cap: each target runs about 8 s, long enough to be seen doing so.
    const layerBytes = 8 * 1024 * 1024;
    const { tar } = await makeImageTar(name, { layers: 2, layerBytes });
    const digest = await cluster.loadImage('agent-1', tar, name);

    await open('Images × machines');
    const cell = (machine: string) => page.getByTestId(`cell-${machine}-${digest}`);
    await page.locator(`[data-testid="cell-agent-1-${digest}"][data-state="present"]`).waitFor(WAIT);
    expect(await cell('agent-2').getAttribute('data-state')).toBe('absent');
    await expectText(page.getByTestId(`row-${digest}`), name);

    // The filter narrows the rows by reference.
    const toolRow = page.locator('[data-testid^="row-"]').filter({ hasText: toolRef });
    await toolRow.waitFor(WAIT);
    await page.getByLabel('filter by reference or digest').fill('web/app');
    await toolRow.waitFor({ ...WAIT, state: 'detached' });
    await page.getByTestId(`row-${digest}`).waitFor(WAIT);
    await page.getByLabel('filter by reference or digest').fill('');
    await toolRow.waitFor(WAIT);

    await page.getByTestId(`row-${digest}`).getByRole('button', { name: 'Distribute…' }).click();
    const form = page.getByTestId('distribute-form');
    await form.getByLabel('agent-2').check();
    await form.getByLabel('agent-3').check();
    await expectText(form.getByTestId('command'), `stowctl image distribute --digest ${digest} --from agent-1 --to agent-2,agent-3`);
    await form.getByRole('button', { name: 'Distribute', exact: true }).click();

    // While it runs (each waited for on its own, so none waits behind another): the matrix shows both
    // targets transferring, with the share of bytes moved so far, and the operation under the form
    // streams the bytes its targets have received.
    const transferring = (machine: string) => page.locator(`[data-testid="cell-${machine}-${digest}"][data-state="transferring"]`);
    await Promise.all([
      transferring('agent-2').waitFor(WAIT),
      transferring('agent-3').waitFor(WAIT),
      transferring('agent-2').filter({ hasText: /[1-9]\d*%/ }).waitFor(WAIT),
      form.locator('[data-testid="target-agent-3"][data-status="running"]').filter({ hasText: /[1-9][\d.]* (B|KiB|MiB) \/ / }).waitFor(WAIT),
    ]);
    const screenshot = process.env['STOWAGE_DASHBOARD_SCREENSHOT'];
    if (screenshot) {
      await mkdir(dirname(screenshot), { recursive: true });
      await page.getByTestId('matrix').scrollIntoViewIfNeeded();
      await page.screenshot({ path: screenshot, fullPage: true });
    }
    await page.locator(`[data-testid="cell-agent-2-${digest}"][data-state="present"]`).waitFor(WAIT);
    await page.locator(`[data-testid="cell-agent-3-${digest}"][data-state="present"]`).waitFor(WAIT);

    // The targets' disk use, reported with their heartbeats, now counts the image's bytes.
    await until(
      'agent-2 to report the image on its disk',
      async () => {
        const r = await cluster.api<{ machines: Machine[] }>('GET', '/api/v1/machines');
        return (r.body.machines.find((m) => m.id === 'agent-2')?.disk_used_bytes ?? 0) >= 2 * layerBytes ? true : undefined;
      },
      { timeoutMs: 60_000, everyMs: 500 },
    );

    // The operation, followed over SSE under the form, ends with every target present.
    const task = form.locator('article.task[data-status="succeeded"]');
    await task.waitFor(WAIT);
    await task.locator('[data-testid="target-agent-2"][data-status="present"]').waitFor(WAIT);
    await task.locator('[data-testid="target-agent-3"][data-status="present"]').waitFor(WAIT);

    // The operations view lists it; opening it shows the per-target results from its event stream.
    const ops = await cluster.api<{ operations: Operation[] }>('GET', '/api/v1/operations?kind=distribute');
    const id = ops.body.operations[0]!.id;
    await open('Operations');
    await page.locator(`[data-testid="operation-${id}"][data-status="succeeded"]`).waitFor(WAIT);
    await page.getByRole('link', { name: id }).click();
    await page.locator(`[data-testid="task-${id}"] [data-testid="target-agent-3"][data-status="present"]`).waitFor(WAIT);
    await expectText(page.locator('.detail').getByTestId('command').first(), `stowctl image operation get ${id}`);
  }, TEST_TIMEOUT);

  it('cancels a running operation from the operations view', async () => {
    const name = 'example.test/web/slow:1.0';
    // 24 MiB at the cap: about 12 s to find the running operation and cancel it.
    const { tar } = await makeImageTar(name, { layers: 3, layerBytes: 8 * 1024 * 1024 });
    const digest = await cluster.loadImage('agent-1', tar, name);
    const created = await cluster.api<{ operation: Operation }>('POST', '/api/v1/operations/distribute', { digest, from: 'agent-1', to: ['agent-3'] });
    const id = created.body.operation.id;

    await open('Operations');
    await page.getByRole('link', { name: id }).click();
    const task = page.getByTestId(`task-${id}`);
    await task.locator('[data-testid="target-agent-3"][data-status="running"]').waitFor(WAIT);
    await expectText(page.locator('.detail').getByTestId('command').nth(1), `stowctl image operation cancel ${id}`);
    await page.getByRole('button', { name: 'Cancel operation' }).click();

    await page.locator(`[data-testid="task-${id}"][data-status="cancelled"]`).waitFor(WAIT);
    await task.locator('[data-testid="target-agent-3"][data-status="failed"]').filter({ hasText: 'CANCELLED' }).waitFor(WAIT);
    expect((await cluster.settle(id)).status).toBe('cancelled');
  }, TEST_TIMEOUT);

  it('refuses a user what their role may not do, and changes nothing', async () => {
    const preloadsBefore = (await cluster.api<{ operations: Operation[] }>('GET', '/api/v1/operations?kind=preload')).body.operations.length;

    await page.getByRole('button', { name: 'Log out' }).click();
    await login(aliceToken);
    await page.getByTestId('whoami').filter({ hasText: 'alice (user, research)' }).waitFor(WAIT);
    await open('Machines');
    await page.getByRole('alert').filter({ hasText: 'FORBIDDEN' }).waitFor(WAIT);

    // Her domain's registry is hers to see; who holds an image is not (installed, not where).
    await open('Catalog');
    const row = page.getByTestId(`catalog-${toolRef}`);
    await row.getByTestId('installed').filter({ hasText: 'yes' }).waitFor(WAIT);
    await row.getByRole('button', { name: 'Select' }).click();
    await page.getByLabel('target agents').fill('agent-3');
    await page.getByRole('button', { name: 'Preload' }).click();
    await page.getByRole('alert').filter({ hasText: 'FORBIDDEN' }).waitFor(WAIT);
    expect(await page.locator('article.task').count()).toBe(0);

    const after = await cluster.api<{ operations: Operation[] }>('GET', '/api/v1/operations?kind=preload');
    expect(after.body.operations.length).toBe(preloadsBefore);
    const onAgent3 = await cluster.api<{ records: Availability[] }>('GET', '/api/v1/images/status?machine=agent-3');
    expect(onAgent3.body.records.filter((r) => r.references.includes(toolRef))).toEqual([]);
  }, TEST_TIMEOUT);
});

/** Waits until the locator's text contains `text` (the UI renders asynchronously). */
async function expectText(locator: ReturnType<Page['locator']>, text: string): Promise<void> {
  await locator.filter({ hasText: text }).first().waitFor(WAIT);
}
