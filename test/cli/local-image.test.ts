import { existsSync } from 'node:fs';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '../../src/agent/agent.js';
import { parseAgentConfig } from '../../src/agent/config.js';
import { CliError } from '../../src/cli/errors.js';
import { checkExpectedDigest, readLocalImage } from '../../src/cli/local-image.js';
import { isStowageError } from '../../src/errors.js';
import { makeImageTar, makeMultiPlatformLayout, type TestImageInfo } from '../harness/images.js';
import { run, runOk } from '../harness/run.js';
import { tmpDir } from '../harness/tmp.js';
import { DIGEST_A, cleanEnv, recordingServer, runCli } from './helpers.js';

/** Reading the image to push: from `docker save` / OCI layout tars, and from a real Docker API (an agent). */
describe('stowctl local image', () => {
  let tar: string;
  let image: TestImageInfo;

  beforeAll(async () => {
    ({ tar, image } = await makeImageTar('team/app:1', { layers: 2 }));
  });

  it('reads a docker save archive into a temporary store and removes it on close', async () => {
    const img = await readLocalImage({ image: 'team/app:1', archive: tar });
    const root = img.handles.store.root;
    try {
      expect(img.reference).toBe('docker.io/team/app:1');
      expect(img.kind).toBe('manifest');
      expect(img.configDigests).toEqual([image.configDigest]);
      expect(img.manifests).toEqual([img.digest]);
      expect(img.platform).toBe('linux/amd64');
      // Every layer and the config are in the store, verified; the size adds them up with the manifest.
      const rec = img.handles.images.getImage(img.digest)!;
      expect(rec.layers).toHaveLength(image.layers.length);
      for (const l of [...rec.layers, rec.configDigest, img.digest]) expect(await img.handles.store.has(l)).toBe(true);
      expect(img.sizeBytes).toBe(rec.size);
      expect(img.sizeBytes).toBeGreaterThan(image.layers.length * 2048);
      expect(existsSync(root)).toBe(true);
    } finally {
      await img.close();
    }
    expect(existsSync(root)).toBe(false);
  });

  it('refuses a tag the archive does not hold unless --tag names its only image so; refuses a platform it does not have', async () => {
    const refused = await readLocalImage({ image: 'something/else:2', archive: tar }).catch((e: unknown) => e);
    expect(isStowageError(refused, 'IMAGE_NOT_FOUND')).toBe(true);
    expect((refused as Error).message).toContain('holds docker.io/team/app:1, not docker.io/something/else:2');
    expect((refused as Error).message).toContain('--tag');

    const img = await readLocalImage({ image: 'something/else:2', archive: tar, retag: true });
    expect(img.configDigests).toEqual([image.configDigest]);
    expect(img.reference).toBe('docker.io/something/else:2');
    await img.close();

    const err = await readLocalImage({ image: 'team/app:1', archive: tar, platform: 'linux/arm64' }).catch((e: unknown) => e);
    expect(isStowageError(err, 'PLATFORM_NOT_FOUND')).toBe(true);
    expect((err as Error).message).toBe('team/app:1 is linux/amd64, not linux/arm64');
  });

  it('picks a platform from an OCI layout tar holding an index, or pushes the whole index', async () => {
    const dir = await tmpDir('stowctl-multi-');
    const layout = join(dir, 'layout');
    await mkdir(layout);
    const multi = await makeMultiPlatformLayout(layout, ['linux/amd64', 'linux/arm64/v8'], { tag: '1.0' });
    const ociTar = join(dir, 'multi.tar');
    await runOk('tar', ['-C', layout, '-cf', ociTar, '.']);

    const arm = await readLocalImage({ image: 'team/multi:1.0', archive: ociTar, platform: 'linux/arm64' });
    expect(arm.kind).toBe('manifest');
    expect(arm.digest).toBe(multi.children[1]!.manifestDigest);
    expect(arm.indexDigest).toBe(multi.indexDigest);
    expect(arm.configDigests).toEqual([multi.children[1]!.configDigest]);
    // The index it came from, the manifest and the image ID all name it; another digest does not.
    for (const d of [multi.indexDigest, arm.digest, multi.children[1]!.configDigest]) expect(() => checkExpectedDigest(arm, d, 'x')).not.toThrow();
    const mismatch = (() => {
      try {
        checkExpectedDigest(arm, multi.children[0]!.configDigest, 'team/multi:1.0');
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(mismatch).toBeInstanceOf(CliError);
    expect((mismatch as CliError).code).toBe('DIGEST_MISMATCH');
    await arm.close();

    const all = await readLocalImage({ image: 'team/multi:1.0', archive: ociTar });
    expect(all.kind).toBe('index');
    expect(all.digest).toBe(multi.indexDigest);
    expect(all.manifests.sort()).toEqual(multi.children.map((c) => c.manifestDigest).sort());
    expect(all.sizeBytes).toBeGreaterThan(multi.indexSize);
    await all.close();
  });

  it('reports a corrupt archive as INVALID_ARCHIVE and leaves no temporary store', async () => {
    const bad = join(await tmpDir('stowctl-bad-'), 'bad.tar');
    await runOk('sh', ['-c', `head -c 3000 ${tar} > ${bad}`]);
    const err = await readLocalImage({ image: 'team/app:1', archive: bad }).catch((e: unknown) => e);
    expect(isStowageError(err)).toBe(true);
  });

  describe('from a Docker API (a Stowage agent)', () => {
    let agent: RunningAgent;

    beforeAll(async () => {
      agent = await startAgent(parseAgentConfig({ dataDir: await tmpDir('stowctl-agent-'), engine: { tcp: { port: 0 } } }));
      const load = await run('docker', ['load', '-i', tar], { DOCKER_HOST: agent.engineTcp!, DOCKER_CONFIG: await tmpDir('stowctl-dcfg-') });
      expect(load.code, load.stderr).toBe(0);
    });
    afterAll(() => agent?.close());

    it('streams GET /images/{name}/get over TCP and over the unix socket', async () => {
      for (const dockerHost of [agent.engineTcp!, `unix://${agent.engineSocket}`]) {
        const img = await readLocalImage({ image: 'team/app:1', dockerHost });
        expect(img.configDigests).toEqual([image.configDigest]);
        expect(img.reference).toBe('docker.io/team/app:1');
        await img.close();
      }
      const byId = await readLocalImage({ image: image.configDigest, dockerHost: agent.engineTcp! });
      expect(byId.configDigests).toEqual([image.configDigest]);
      expect(byId.reference).toBeUndefined();
      await byId.close();
    });

    it('says the daemon has no such image, or cannot be reached', async () => {
      const missing = await readLocalImage({ image: 'team/nope:1', dockerHost: agent.engineTcp! }).catch((e: unknown) => e);
      expect(missing).toBeInstanceOf(CliError);
      expect((missing as CliError).code).toBe('IMAGE_NOT_FOUND');
      expect((missing as CliError).message).toContain('team/nope:1');

      const down = await readLocalImage({ image: 'team/app:1', dockerHost: 'unix:///nonexistent/docker.sock' }).catch((e: unknown) => e);
      expect((down as CliError).code).toBe('DOCKER_UNAVAILABLE');
    });

    it('stowctl image push --expected-digest: a mismatch exits 1 with DIGEST_MISMATCH and never contacts the control plane', async () => {
      const srv = await recordingServer();
      const tmp = await tmpDir('stowctl-tmp-');
      try {
        const env = cleanEnv(await tmpDir('stowctl-cfg-'), { DOCKER_HOST: agent.engineTcp!, TMPDIR: tmp });
        const r = await runCli(['--json', '--host', srv.url, '--token', 't', 'image', 'push', 'team/app:1', '--to', 'm1', '--expected-digest', DIGEST_A], env);
        expect(r.code, r.stderr).toBe(1);
        const body = JSON.parse(r.stdout);
        expect(body.error.code).toBe('DIGEST_MISMATCH');
        expect(body.error.message).toContain(`not the expected ${DIGEST_A}`);
        expect(body.error.details.config_digests).toEqual([image.configDigest]);

        const archive = await runCli(['--host', srv.url, '--token', 't', 'image', 'push', 'team/app:1', '--archive', tar, '--to', 'm1', '--expected-digest', DIGEST_A], env);
        expect(archive.code).toBe(1);
        expect(archive.stderr).toContain('[DIGEST_MISMATCH]');

        expect(srv.connections()).toBe(0);
        // The temporary stores are gone with the process.
        expect((await readdir(tmp)).filter((n) => n.startsWith('stowctl-'))).toEqual([]);
      } finally {
        await srv.close();
      }
    });

    it('stowctl image push --dry-run reads the image and prints the push request it would send', async () => {
      const env = cleanEnv(await tmpDir('stowctl-cfg-'), { DOCKER_HOST: agent.engineTcp! });
      const r = await runCli(
        ['--dry-run', '--json', '--host', 'http://127.0.0.1:1', 'image', 'push', 'team/app:1', '--to', 'm1,m2', '--expected-digest', image.configDigest],
        env,
      );
      expect(r.code, r.stderr).toBe(0);
      const { request } = JSON.parse(r.stdout);
      expect(request.method).toBe('POST');
      expect(request.url).toBe('http://127.0.0.1:1/api/v1/operations/push');
      expect(request.body).toMatchObject({ reference: 'docker.io/team/app:1', to: ['m1', 'm2'], platform: 'linux/amd64', expected_digest: image.configDigest });
      expect(request.body.digest).toMatch(/^sha256:[a-f0-9]{64}$/);
      expect(request.body.size_bytes).toBeGreaterThan(0);
    });
  });
});
