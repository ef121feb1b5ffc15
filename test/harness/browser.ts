import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { type BrowserContext, type Page, chromium } from 'playwright-core';
import { runOk } from './run.js';
import { tmpDir } from './tmp.js';

/**
 * A real browser for the dashboard tests: Debian's Chromium driven by playwright-core (no browser
 * download), headless, with a throwaway profile. And the dashboard built from src/web into a temp dir,
 * so a test never runs against a stale dist/web.
 *
 *   const webDir = await buildDashboard();
 *   const browser = await launchBrowser();   // browser.page, browser.close()
 */

const CHROMIUM = process.env['STOWAGE_TEST_CHROMIUM'] ?? '/usr/bin/chromium';
const VITE = join(import.meta.dirname, '..', '..', 'node_modules', 'vite', 'bin', 'vite.js');
const VITE_CONFIG = join(import.meta.dirname, '..', '..', 'src', 'web', 'vite.config.ts');

export interface TestBrowser {
  context: BrowserContext;
  page: Page;
  close(): Promise<void>;
}

export async function launchBrowser(): Promise<TestBrowser> {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (apt-get install chromium; .ci/run does)`);
  const profile = await tmpDir('stowage-chromium-');
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1400, height: 900 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    timeout: 120_000,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  return { context, page, close: () => context.close() };
}

/** Builds the dashboard (vite build of src/web) into a fresh temp dir and returns it. */
export async function buildDashboard(): Promise<string> {
  const outDir = await tmpDir('stowage-web-');
  await runOk(process.execPath, [VITE, 'build', '--config', VITE_CONFIG, '--outDir', outDir], { timeoutMs: 180_000 });
  return outDir;
}
