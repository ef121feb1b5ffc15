import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createUser } from '../../src/control/auth/api-keys.js';
import { RegistryStore } from '../../src/control/catalog/registries.js';
import { type TestRegistry, startRegistry } from '../harness/registry.js';
import { runMain } from '../cli/helpers.js';
import { type CatalogPlane, pushLabelledImages, startCatalogPlane } from './catalog-harness.js';

/**
 * The stowctl catalog and task commands against a real control plane and registry.
 */

let reg: TestRegistry;
let plane: CatalogPlane;
let token: string;

/** stowctl's main() in this process, against the plane, with captured output. */
function stowctl(argv: string[], opts: { tty?: boolean } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return runMain(argv, { STOWAGE_HOST: plane.url, STOWAGE_TOKEN: token, HOME: '/nonexistent', XDG_CONFIG_HOME: '/nonexistent' }, opts);
}

beforeAll(async () => {
  reg = await startRegistry();
  await pushLabelledImages(reg.host);
  plane = await startCatalogPlane();
  await new RegistryStore(plane.ctx.db).put({ name: reg.host, url: reg.url });
  token = await createApiKey(plane.ctx.db, (await createUser(plane.ctx.db, { name: 'root', role: 'superadmin' })).userId);
});
afterAll(async () => {
  await plane?.close();
  await reg?.stop();
});

describe('stowctl catalog …', () => {
  it('rescans with progress lines, then lists the catalog', async () => {
    const r = await stowctl(['catalog', 'rescan', reg.host]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/[0-9a-f-]{36}: 5\/5 /);
    expect(r.stdout).toMatch(/^done: scanned 5 tags/);

    const list = await stowctl(['--json', 'catalog', 'list']);
    expect(list.code).toBe(0);
    const body = JSON.parse(list.stdout) as { images: Array<{ name: string; supported_accelerators: string[] }> };
    expect(body.images.find((i) => i.name === 'test/app')?.supported_accelerators).toEqual(['cuda', 'rocm']);

    const human = await stowctl(['catalog', 'ls']);
    expect(human.stdout.split('\n')[0]).toMatch(/^IMAGE\s+DIGEST\s+SIZE\s+ACCELERATORS\s+LIMITS\s+INSTALLED$/);
    expect(human.stdout).toContain(`${reg.host}/test/app:1`);
  });

  it('aliases, dealiases and forgets', async () => {
    expect((await stowctl(['catalog', 'alias', 'app', `${reg.host}/test/app:1`])).code).toBe(0);
    expect((await stowctl(['catalog', 'ls'])).stdout).toContain('test/app:1 (app)');
    expect((await stowctl(['catalog', 'dealias', 'app'])).code).toBe(0);
    const again = await stowctl(['image', 'dealias', 'app']);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/no alias "app"/);
    expect((await stowctl(['catalog', 'forget', `${reg.host}/test/old:1`])).code).toBe(0);
    expect((await stowctl(['catalog', 'ls'])).stdout).not.toContain('test/old');
  });

  it('task watch draws a progress bar on a terminal and exits by the outcome', async () => {
    const started = await stowctl(['--json', 'image', 'rescan', '--detach', reg.host]);
    const { task_id } = JSON.parse(started.stdout) as { task_id: string };
    const w = await stowctl(['task', 'watch', task_id], { tty: true });
    expect(w.code).toBe(0);
    expect(w.stderr).toContain('\r\x1b[2K');
    expect(w.stderr).toMatch(/█+ 5\/5/);

    await new RegistryStore(plane.ctx.db).put({ name: '127.0.0.1:1', url: 'http://127.0.0.1:1' });
    const failed = await stowctl(['catalog', 'rescan', '127.0.0.1:1']);
    expect(failed.code).toBe(1);
    expect(failed.stdout).toMatch(/^failed: /);
  });

  it('the old `image rescan|alias|…` spellings still work and point to `catalog`', async () => {
    const r = await stowctl(['image', 'dealias', 'nothing-here']);
    expect(r.stderr).toContain('`image dealias` is deprecated; use `stowctl catalog dealias`');
    expect(r.stderr).toMatch(/no alias "nothing-here"/);
  });

  it('a rescan of a registry that is not configured says how to add it; added, it can be listed and removed', async () => {
    const r = await stowctl(['catalog', 'rescan', '127.0.0.1:2']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('no registry "127.0.0.1:2" is configured. Add it with `stowctl catalog registry add 127.0.0.1:2 --insecure`');
    expect(r.stderr).toContain('[REGISTRY_NOT_FOUND]');
    const j = await stowctl(['--json', 'catalog', 'rescan', '127.0.0.1:2']);
    expect(JSON.parse(j.stdout).error.code).toBe('REGISTRY_NOT_FOUND');

    expect((await stowctl(['catalog', 'registry', 'add', '127.0.0.1:2', '--insecure'])).code).toBe(0);
    const listed = JSON.parse((await stowctl(['-o', 'json', 'catalog', 'registry', 'ls'])).stdout) as { registries: Array<{ name: string; url: string }> };
    expect(listed.registries.find((x) => x.name === '127.0.0.1:2')?.url).toBe('http://127.0.0.1:2');
    expect((await stowctl(['catalog', 'registry', 'rm', '127.0.0.1:2'])).code).toBe(0);
    expect((await stowctl(['catalog', 'registry', 'ls', '--format', '{{.Name}}'])).stdout.split('\n')).not.toContain('127.0.0.1:2');
  });

  it('passes refusals through with their code', async () => {
    const userKey = await createApiKey(plane.ctx.db, (await createUser(plane.ctx.db, { name: 'plain', role: 'user' })).userId);
    const saved = token;
    token = userKey;
    try {
      const r = await stowctl(['catalog', 'forget', `${reg.host}/test/app:1`]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/needs the superadmin role.*\[FORBIDDEN\]/);
    } finally {
      token = saved;
    }
  });
});
