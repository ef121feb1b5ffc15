import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseControlConfig } from '../../src/control/config.js';
import { type RunningControl, startControl } from '../../src/control/control.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * How the control plane serves the dashboard's files at /ui/ (the app itself is tested in a browser in
 * dashboard.test.ts): the built files, the app's routes, a clear page when it is not built, nothing
 * outside the build directory, and the login check endpoint.
 */

let built: RunningControl;
let unbuilt: RunningControl;
let secretOutside: string;

async function get(base: string, path: string, headers: Record<string, string> = {}) {
  const res = await request(`${base}${path}`, { headers });
  return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
}

beforeAll(async () => {
  const root = await tmpDir('stowage-webdir-');
  const webDir = join(root, 'web');
  await mkdir(join(webDir, 'assets'), { recursive: true });
  await writeFile(join(webDir, 'index.html'), '<!doctype html><title>Stowage</title><div id="root"></div>');
  await writeFile(join(webDir, 'assets', 'index-abc123.js'), 'console.log("app")');
  await writeFile(join(webDir, '.hidden'), 'not for the web');
  // A file beside the build directory, whose name a traversal would reach.
  secretOutside = 'the control plane must never serve this';
  await writeFile(join(root, 'secret.txt'), secretOutside);
  built = await startControl(parseControlConfig({ dataDir: await tmpDir('stowage-ctl-'), listen: { port: 0 }, webDir }));
  unbuilt = await startControl(parseControlConfig({ dataDir: await tmpDir('stowage-ctl-'), listen: { port: 0 }, webDir: join(root, 'missing') }));
});

afterAll(async () => {
  await built?.close();
  await unbuilt?.close();
});

describe('the dashboard at /ui/', () => {
  it('serves the built index, its hashed assets (cached for good) and the index for app routes', async () => {
    const index = await get(built.url, '/ui/');
    expect(index.status).toBe(200);
    expect(index.headers['content-type']).toMatch(/^text\/html/);
    expect(index.headers['cache-control']).toBe('no-cache');
    expect(index.headers['content-security-policy']).toContain("default-src 'self'");
    expect(index.text).toContain('<div id="root">');

    const asset = await get(built.url, '/ui/assets/index-abc123.js');
    expect(asset.status).toBe(200);
    expect(asset.headers['content-type']).toMatch(/^text\/javascript/);
    expect(asset.headers['cache-control']).toContain('immutable');
    expect(asset.text).toBe('console.log("app")');

    expect((await get(built.url, '/ui/machines')).text).toContain('<div id="root">');
    const redirect = await get(built.url, '/ui');
    expect(redirect.status).toBe(302);
    expect(redirect.headers['location']).toBe('/ui/');
    expect((await get(built.url, '/ui/assets/missing.js')).status).toBe(404);
  });

  it('serves nothing outside the build directory, nor hidden files in it', async () => {
    for (const path of ['/ui/../secret.txt', '/ui/%2e%2e/secret.txt', '/ui/assets/%2e%2e/%2e%2e/secret.txt', '/ui/..%2fsecret.txt', '/ui/.hidden', '/ui/assets/..%5c..%5csecret.txt']) {
      const res = await get(built.url, path);
      expect(res.status, path).toBeGreaterThanOrEqual(300);
      expect(res.text, path).not.toContain(secretOutside);
      expect(res.text, path).not.toContain('not for the web');
    }
  });

  it('says how to build it when it is not built', async () => {
    const res = await get(unbuilt.url, '/ui/');
    expect(res.status).toBe(503);
    expect(res.text).toContain('The dashboard is not built');
    expect(res.text).toContain('npm run build');
  });

  it('tells an API key who it belongs to, and refuses a wrong one', async () => {
    const me = await get(built.url, '/api/v1/whoami', { authorization: `Bearer ${built.adminToken}` });
    expect(me.status).toBe(200);
    expect(JSON.parse(me.text)).toEqual({ user: { name: 'admin', role: 'superadmin', domain: null } });
    const wrong = await get(built.url, '/api/v1/whoami', { authorization: 'Bearer stk_not-a-key' });
    expect(wrong.status).toBe(401);
    expect(JSON.parse(wrong.text).error.code).toBe('UNAUTHORIZED');
  });
});
