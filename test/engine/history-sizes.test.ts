import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveImage } from '../../src/engine/resolve.js';
import { makeImageTar } from '../harness/images.js';
import type { RunResult } from '../harness/run.js';
import { type CoreEngine, type DockerRunner, dockerFor, startCoreEngine } from './core-helpers.js';

/** `docker history` shows each layer's stored size (taken from the manifest), and 0 for empty layers. */

let engine: CoreEngine;
let docker: DockerRunner;

function ok(r: RunResult): string {
  if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}

beforeAll(async () => {
  engine = await startCoreEngine();
  docker = await dockerFor(engine, { DOCKER_BUILDKIT: '0' });
  const loaded = await makeImageTar('loaded:1', { layers: 3, layerBytes: 5000 });
  ok(await docker(['load', '-i', loaded.tar]));
  // Empty layers (ENV, CMD) between real ones.
  const ctxDir = join(engine.root, 'ctx');
  await mkdir(ctxDir, { recursive: true });
  await writeFile(join(ctxDir, 'a.txt'), 'a'.repeat(3000));
  await writeFile(join(ctxDir, 'b.txt'), 'b'.repeat(70));
  await writeFile(join(ctxDir, 'Dockerfile'), 'FROM scratch\nCOPY a.txt /a.txt\nENV X=1\nCOPY b.txt /b.txt\nCMD ["/x"]\n');
  ok(await docker(['build', '-t', 'built:1', ctxDir]));
}, 120_000);

afterAll(async () => {
  await engine?.close();
});

describe('docker history layer sizes', () => {
  it.each([
    ['loaded:1', [true, true, true]],
    ['built:1', [true, false, true, false]],
  ] as const)('%s: stored layer sizes, oldest last, 0 for empty layers', async (name, layered) => {
    const img = resolveImage(engine.ctx.images, name).image;
    const stored: number[] = [];
    for (const l of img.primary.layers) stored.push((await engine.ctx.store.stat(l))!.size);
    let next = 0;
    const want = layered.map((hasLayer) => (hasLayer ? stored[next++]! : 0)).reverse();
    const out = ok(await docker(['history', '--no-trunc', '--human=false', '--format', '{{.Size}}', name]));
    expect(out.trim().split('\n').map(Number)).toEqual(want);
    expect(want.filter((n) => n > 0)).toHaveLength(img.primary.layers.length);
  });
});
