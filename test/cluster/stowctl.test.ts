import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningAgent, startAgent } from '../../src/agent/agent.js';
import { parseAgentConfig } from '../../src/agent/config.js';
import type { Availability, Machine, Operation } from '../../src/control/wire.js';
import { type Cluster, startCluster, until } from '../harness/cluster.js';
import { makeImageTar, makeMultiPlatformLayout } from '../harness/images.js';
import { runOk } from '../harness/run.js';
import { join } from 'node:path';
import { tmpDir } from '../harness/tmp.js';
import { runMain } from '../cli/helpers.js';

/**
 * The operator's job end to end, through the real stowctl process: push from a local Docker daemon (a
 * standalone Stowage agent stands in for dockerd) and from an archive, status, distribute, inspect,
 * operations and machines, with --json parsed and checked.
 */

let cluster: Cluster;
let daemon: RunningAgent;
let pushed: { digest: string; imageId: string };

const docker = (host: string, args: string[]) => runOk('docker', args, { env: { DOCKER_HOST: host } });

async function json<T>(args: string[], env: Record<string, string> = {}): Promise<{ code: number; body: T; stderr: string }> {
  const r = await cluster.stowctl(['--json', ...args], { env });
  let body: T;
  try {
    body = JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`stowctl ${args.join(' ')} printed no JSON (exit ${r.code}): ${r.stdout}\n${r.stderr}`);
  }
  return { code: r.code, body, stderr: r.stderr };
}

beforeAll(async () => {
  cluster = await startCluster({ agents: 3 });
  daemon = await startAgent(parseAgentConfig({ dataDir: await tmpDir('stowage-local-daemon-'), engine: { tcp: { port: 0 } } }));
  const { tar } = await makeImageTar('example.test/web/app:2.1', { layers: 2, layerBytes: 128 * 1024 });
  await docker(daemon.engineTcp!, ['load', '-i', tar]);
  const imageId = (await docker(daemon.engineTcp!, ['image', 'inspect', '--format', '{{.Id}}', 'example.test/web/app:2.1'])).trim();
  pushed = { digest: '', imageId };
}, 900_000);

afterAll(async () => {
  await daemon?.close();
  await cluster?.close();
});

describe('stowctl against a real cluster', () => {
  it('pushes from the local Docker daemon to two machines; status shows both with one digest', async () => {
    const push = await json<{ operation: Operation }>(['image', 'push', 'example.test/web/app:2.1', '--to', 'agent-1', '--to', 'agent-2'], {
      DOCKER_HOST: daemon.engineTcp!,
    });
    expect(push.code, push.stderr).toBe(0);
    const op = push.body.operation;
    expect(op.kind).toBe('push');
    expect(op.status).toBe('succeeded');
    expect(op.targets.map((t) => [t.machine_id, t.status])).toEqual([
      ['agent-1', 'present'],
      ['agent-2', 'present'],
    ]);
    expect(op.artifact.reference).toBe('example.test/web/app:2.1');
    pushed.digest = op.artifact.digest!;

    await cluster.waitForImage('agent-2', pushed.digest);
    const status = await json<{ records: Availability[] }>(['image', 'status', '--digest', pushed.digest]);
    expect(status.code).toBe(0);
    const present = status.body.records.filter((r) => r.presence.state === 'present');
    expect(present.map((r) => r.machine_id)).toEqual(['agent-1', 'agent-2']);
    for (const r of present) {
      expect(r.digest).toBe(pushed.digest);
      expect(r.config_digest).toBe(pushed.imageId);
      expect(r.references).toContain('example.test/web/app:2.1');
    }

    // The human table: aligned columns, one row per machine.
    const table = await cluster.stowctl(['image', 'status', '--digest', pushed.digest]);
    expect(table.code).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^MACHINE\s+DIGEST\s+PLATFORM\s+STATE/);
    expect(lines.slice(1).map((l) => l.split(/\s+/)[0])).toEqual(['agent-1', 'agent-2']);
    expect(lines[1]!.indexOf('present')).toBe(lines[0]!.indexOf('STATE'));
  }, 900_000);

  it('distributes to the third machine (present), then again (skipped_present, zero bytes); docker sees the same ID', async () => {
    const first = await json<{ operation: Operation }>(['image', 'distribute', '--digest', pushed.digest, '--from', 'agent-1', '--to', 'agent-3']);
    expect(first.code, first.stderr).toBe(0);
    expect(first.body.operation.targets[0]).toMatchObject({ machine_id: 'agent-3', status: 'present' });
    expect(first.body.operation.targets[0]!.bytes_transferred).toBeGreaterThan(2 * 128 * 1024);

    const again = await json<{ operation: Operation }>(['image', 'distribute', '--digest', pushed.digest, '--from', 'agent-2', '--to', 'agent-3']);
    expect(again.code).toBe(0);
    expect(again.body.operation.targets[0]).toMatchObject({ machine_id: 'agent-3', status: 'skipped_present', bytes_transferred: 0 });

    const listed = await docker(cluster.agents[2]!.dockerHost, ['images', '--no-trunc', '--format', '{{.Repository}}:{{.Tag}} {{.ID}}']);
    expect(listed).toContain(`example.test/web/app:2.1 ${pushed.imageId}`);

    // Plain progress lines and a result table when stdout is not a terminal.
    const human = await cluster.stowctl(['image', 'distribute', '--digest', pushed.digest, '--from', 'agent-1', '--to', 'agent-2']);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/MACHINE\s+STATUS\s+BYTES/);
    expect(human.stdout).toMatch(/agent-2\s+skipped_present/);
  }, 900_000);

  it('pushes from an archive; a second push of it uploads nothing and skips the machines that have it', async () => {
    const { tar, image } = await makeImageTar('example.test/batch/job:7', { layers: 2, layerBytes: 64 * 1024 });
    const push = await json<{ operation: Operation }>(['image', 'push', 'example.test/batch/job:7', '--archive', tar, '--to', 'agent-2', '--to', 'agent-3']);
    expect(push.code, push.stderr).toBe(0);
    expect(push.body.operation.targets.map((t) => t.status)).toEqual(['present', 'present']);
    // A docker-archive carries no manifest: the one it gets is built on import, so the image ID is what must match.
    const digest = push.body.operation.artifact.digest!;
    const id = (await docker(cluster.agents[2]!.dockerHost, ['image', 'inspect', '--format', '{{.Id}}', 'example.test/batch/job:7'])).trim();
    expect(id).toBe(image.configDigest);

    await cluster.waitForImage('agent-2', digest);
    const again = await json<{ operation: Operation }>(['image', 'push', 'example.test/batch/job:7', '--archive', tar, '--to', 'agent-2', '--to', 'agent-3']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.body.operation.targets.map((t) => [t.status, t.bytes_transferred])).toEqual([
      ['skipped_present', 0],
      ['skipped_present', 0],
    ]);
  }, 900_000);

  it('draws live per-target progress bars on a terminal', async () => {
    const { tar } = await makeImageTar('example.test/tty/app:1', { layers: 2, layerBytes: 512 * 1024 });
    const env = { ...process.env, STOWAGE_HOST: cluster.controlUrl, STOWAGE_TOKEN: cluster.adminToken };
    const r = await runMain(['image', 'push', 'example.test/tty/app:1', '--archive', tar, '--to', 'agent-1', '--to', 'agent-3'], env, { tty: true });
    expect(r.code, r.stderr).toBe(0);
    // One bar per target with bytes done / total, then the result table on stdout.
    expect(r.stderr).toMatch(/agent-3 +[█░]+ +[\d.]+ (KiB|MiB) \/ [\d.]+ (KiB|MiB)/);
    expect(r.stdout).toMatch(/agent-1\s+present/);
    expect(r.stdout).toMatch(/agent-3\s+present/);
  }, 900_000);

  it('--expected-digest that does not match fails before anything is sent or recorded', async () => {
    const before = (await json<{ operations: Operation[] }>(['image', 'operation', 'list', '--limit', '1000'])).body.operations.length;
    const wrong = `sha256:${'e'.repeat(64)}`;
    const r = await json<{ error: { code: string; message: string } }>(
      ['image', 'push', 'example.test/web/app:2.1', '--to', 'agent-3', '--expected-digest', wrong],
      { DOCKER_HOST: daemon.engineTcp! },
    );
    expect(r.code).toBe(1);
    expect(r.body.error.code).toBe('DIGEST_MISMATCH');
    expect(r.body.error.message).toContain(wrong);
    const after = (await json<{ operations: Operation[] }>(['image', 'operation', 'list', '--limit', '1000'])).body.operations.length;
    expect(after).toBe(before);

    const ok = await json<{ operation: Operation }>(['image', 'push', 'example.test/web/app:2.1', '--to', 'agent-3', '--expected-digest', pushed.digest], {
      DOCKER_HOST: daemon.engineTcp!,
    });
    expect(ok.code, ok.stderr).toBe(0);
  }, 900_000);

  it('pushing a new tag of an image a machine holds uploads nothing but records the tag there', async () => {
    await docker(daemon.engineTcp!, ['tag', 'example.test/web/app:2.1', 'example.test/web/app:stable']);
    const r = await json<{ operation: Operation }>(['image', 'push', 'example.test/web/app:stable', '--to', 'agent-1'], { DOCKER_HOST: daemon.engineTcp! });
    expect(r.code, r.stderr).toBe(0);
    expect(r.body.operation.targets).toMatchObject([{ machine_id: 'agent-1', status: 'skipped_present', bytes_transferred: 0 }]);
    const listed = await docker(cluster.agents[0]!.dockerHost, ['images', '--no-trunc', '--format', '{{.Repository}}:{{.Tag}} {{.ID}}']);
    expect(listed).toContain(`example.test/web/app:stable ${pushed.imageId}`);
    expect(listed).toContain(`example.test/web/app:2.1 ${pushed.imageId}`);
  }, 900_000);

  it('inspect, operation list/get and machine list answer with whole objects', async () => {
    const inspect = await json<{ digest: string; platforms: Array<{ config_digest: string; layers: unknown[] }>; references: string[] }>([
      'image',
      'inspect',
      '--digest',
      pushed.digest,
    ]);
    expect(inspect.code).toBe(0);
    expect(inspect.body.digest).toBe(pushed.digest);
    expect(inspect.body.platforms[0]!.config_digest).toBe(pushed.imageId);
    expect(inspect.body.platforms[0]!.layers).toHaveLength(2);
    expect(inspect.body.references).toContain('example.test/web/app:2.1');

    const list = await json<{ operations: Operation[] }>(['image', 'operation', 'list', '--kind', 'distribute']);
    expect(list.body.operations.length).toBeGreaterThanOrEqual(3);
    expect(list.body.operations.every((o) => o.kind === 'distribute')).toBe(true);
    const got = await json<{ operation: Operation }>(['operation', 'get', list.body.operations[0]!.id]);
    expect(got.body.operation.id).toBe(list.body.operations[0]!.id);

    const missing = await json<{ error: { code: string } }>(['operation', 'get', 'op-01JXXXXXXXXXXXXXXXXXXXXXXX']);
    expect(missing.code).toBe(1);
    expect(missing.body.error.code).toBe('OPERATION_NOT_FOUND');

    const machines = await json<{ machines: Machine[] }>(['machine', 'list']);
    expect(machines.body.machines.map((m) => [m.id, m.status])).toEqual([
      ['agent-1', 'online'],
      ['agent-2', 'online'],
      ['agent-3', 'online'],
    ]);
  }, 900_000);

  it('names images as docker does: short reference, digest prefix from `image status`, image ID; inspect takes short names', async () => {
    const { tar, image } = await makeImageTar('myapp:1.0', { layers: 1, layerBytes: 64 * 1024 });
    const push = await json<{ operation: Operation }>(['image', 'push', 'myapp:1.0', '--archive', tar, '--to', 'agent-1']);
    expect(push.code, push.stderr).toBe(0);
    const digest = push.body.operation.artifact.digest!;
    expect(push.body.operation.artifact.reference).toBe('docker.io/library/myapp:1.0');
    await cluster.waitForImage('agent-1', digest);

    // A short name, as the operator typed it for push.
    const byName = await json<{ operation: Operation }>(['image', 'distribute', 'myapp:1.0', '--from', 'agent-1', '--to', 'agent-2']);
    expect(byName.code, JSON.stringify(byName.body)).toBe(0);
    expect(byName.body.operation.artifact.digest).toBe(digest);
    expect(byName.body.operation.targets[0]).toMatchObject({ machine_id: 'agent-2', status: 'present' });

    // Defect 2: inspect normalizes short names, by flag and by argument.
    for (const args of [['--reference', 'myapp:1.0'], ['myapp:1.0']]) {
      const inspect = await json<{ digest: string; platforms: Array<{ config_digest: string }> }>(['image', 'inspect', ...args]);
      expect(inspect.code, JSON.stringify(inspect.body)).toBe(0);
      expect(inspect.body.digest).toBe(digest);
      expect(inspect.body.platforms[0]!.config_digest).toBe(image.configDigest);
    }

    // The 12-hex digest `image status` prints is enough.
    const table = await cluster.stowctl(['image', 'status', 'myapp:1.0', '--machine', 'agent-2']);
    expect(table.code, table.stderr).toBe(0);
    const shown = table.stdout.trim().split('\n')[1]!.split(/\s+/)[1]!;
    expect(shown).toBe(digest.slice('sha256:'.length, 'sha256:'.length + 12));
    const byPrefix = await json<{ operation: Operation }>(['image', 'distribute', shown, '--from', 'agent-2', '--to', 'agent-3']);
    expect(byPrefix.code, JSON.stringify(byPrefix.body)).toBe(0);
    expect(byPrefix.body.operation.artifact.digest).toBe(digest);

    // The image ID `docker images` shows.
    const id = (await docker(cluster.agents[0]!.dockerHost, ['images', '--format', '{{.ID}}', 'myapp:1.0'])).trim();
    expect(`sha256:${id}`).toBe(image.configDigest.slice(0, 'sha256:'.length + id.length));
    const byId = await json<{ operation: Operation }>(['image', 'distribute', id, '--from', 'agent-1', '--to', 'agent-3']);
    expect(byId.code, JSON.stringify(byId.body)).toBe(0);
    expect(byId.body.operation.targets[0]).toMatchObject({ machine_id: 'agent-3', status: 'skipped_present' });

    // A name the source does not hold says what it was read as.
    const missing = await json<{ error: { code: string; message: string } }>(['image', 'distribute', 'nothere:1', '--from', 'agent-1', '--to', 'agent-2']);
    expect([missing.code, missing.body.error.code]).toEqual([1, 'IMAGE_NOT_FOUND']);
    expect(missing.body.error.message).toContain('agent-1 holds no image named nothere:1 (docker.io/library/nothere:1)');
  }, 900_000);

  it('one name on two different images is refused with the candidates listed', async () => {
    const a = await makeImageTar('example.test/same/name:1', { layers: 1 });
    const b = await makeImageTar('example.test/same/name:1', { layers: 1 });
    const onOne = await cluster.loadImage('agent-1', a.tar, 'example.test/same/name:1');
    const onTwo = await cluster.loadImage('agent-2', b.tar, 'example.test/same/name:1');
    expect(onOne).not.toBe(onTwo);
    const r = await json<{ error: { code: string; message: string; details: { candidates: Array<{ digest: string; machines: string[] }> } } }>([
      'image',
      'inspect',
      'example.test/same/name:1',
    ]);
    expect([r.code, r.body.error.code]).toEqual([2, 'AMBIGUOUS_IMAGE']);
    expect(r.body.error.details.candidates.map((c) => [c.digest, c.machines])).toEqual(
      [
        [onOne, ['agent-1']],
        [onTwo, ['agent-2']],
      ].sort((x, y) => String(x[0]).localeCompare(String(y[0]))),
    );
    const human = await cluster.stowctl(['image', 'inspect', 'example.test/same/name:1']);
    expect(human.code).toBe(2);
    expect(human.stderr).toContain('names 2 different images');
    expect(human.stderr).toContain(`${onOne.slice(7, 19)}  example.test/same/name:1  on agent-1`);
    // Where the source is named, its own image is meant: no ambiguity.
    const dist = await json<{ operation: Operation }>(['image', 'distribute', 'example.test/same/name:1', '--from', 'agent-2', '--to', 'agent-3']);
    expect(dist.code, JSON.stringify(dist.body)).toBe(0);
    expect(dist.body.operation.artifact.digest).toBe(onTwo);
  }, 900_000);

  it('image ls lists what the machines hold; -o yaml, --format and --no-trunc shape it', async () => {
    const ls = await json<{ images: Array<{ references: string[]; digest: string; machines: string[] }> }>(['image', 'ls', 'myapp:1.0']);
    expect(ls.code).toBe(0);
    expect(ls.body.images).toHaveLength(1);
    expect(ls.body.images[0]!.machines).toEqual(['agent-1', 'agent-2', 'agent-3']);
    const digest = ls.body.images[0]!.digest;

    const human = await cluster.stowctl(['image', 'ls']);
    expect(human.stdout.split('\n')[0]).toMatch(/^REFERENCE\s+DIGEST\s+IMAGE-ID\s+PLATFORM\s+SIZE\s+MACHINES$/);
    expect(human.stdout).toMatch(new RegExp(`docker.io/library/myapp:1.0\\s+${digest.slice(7, 19)}\\s`));

    const format = await cluster.stowctl(['image', 'ls', 'myapp:1.0', '--format', '{{.Digest}} {{join .Machines ","}}']);
    expect(format.stdout.trim()).toBe(`${digest} agent-1,agent-2,agent-3`);
    const yaml = await cluster.stowctl(['image', 'ls', 'myapp:1.0', '-o', 'yaml']);
    expect(yaml.stdout).toContain(`images:\n- references:\n  - docker.io/library/myapp:1.0\n  digest: ${digest}`);
    const full = await cluster.stowctl(['image', 'status', 'myapp:1.0', '--no-trunc']);
    expect(full.stdout).toContain(digest);
    const wide = await cluster.stowctl(['machine', 'ls', '-o', 'wide']);
    expect(wide.stdout.split('\n')[0]).toMatch(/LABELS\s+VERSION\s+JOINED$/);
    const bad = await cluster.stowctl(['image', 'ls', '--format', '{{.Nope}}']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('no field "Nope"');
  }, 900_000);

  it('defect 4: an archive without the tag is refused; with --tag its only image is pushed under it', async () => {
    const { tar } = await makeImageTar('myapp:1.0', { layers: 1, layerBytes: 64 * 1024 });
    const before = (await json<{ operations: Operation[] }>(['image', 'operation', 'list', '--limit', '1000'])).body.operations.length;
    const refused = await json<{ error: { code: string; message: string } }>(['image', 'push', 'myapp:9.9', '--archive', tar, '--to', 'agent-1']);
    expect([refused.code, refused.body.error.code]).toEqual([1, 'IMAGE_NOT_FOUND']);
    expect(refused.body.error.message).toContain('holds docker.io/library/myapp:1.0, not docker.io/library/myapp:9.9');
    expect((await json<{ operations: Operation[] }>(['image', 'operation', 'list', '--limit', '1000'])).body.operations.length).toBe(before);

    const tagged = await json<{ operation: Operation }>(['image', 'push', 'myapp:9.9', '--archive', tar, '--tag', '--to', 'agent-1']);
    expect(tagged.code, JSON.stringify(tagged.body)).toBe(0);
    expect(tagged.body.operation.artifact.reference).toBe('docker.io/library/myapp:9.9');
    const listed = await until('agent-1 to report myapp:9.9', async () => {
      const out = await docker(cluster.agents[0]!.dockerHost, ['images', '--format', '{{.Repository}}:{{.Tag}}']);
      return out.includes('myapp:9.9') ? out : undefined;
    });
    expect(listed).toContain('myapp:9.9');
  }, 900_000);

  it('bad input: unknown machine, source without the digest, malformed digest, wrong token', async () => {
    const unknown = await json<{ error: { code: string } }>(['image', 'distribute', '--digest', pushed.digest, '--from', 'agent-1', '--to', 'nope']);
    expect([unknown.code, unknown.body.error.code]).toEqual([1, 'MACHINE_NOT_FOUND']);
    const lacking = await json<{ error: { code: string } }>(['image', 'distribute', '--digest', `sha256:${'1'.repeat(64)}`, '--from', 'agent-1', '--to', 'agent-2']);
    expect([lacking.code, lacking.body.error.code]).toEqual([1, 'IMAGE_NOT_FOUND']);
    const malformed = await json<{ error: { code: string } }>(['image', 'distribute', '--digest', 'sha256:xyz', '--from', 'agent-1', '--to', 'agent-2']);
    expect([malformed.code, malformed.body.error.code]).toEqual([2, 'INVALID_DIGEST']);
    const token = await json<{ error: { code: string } }>(['image', 'status'], { STOWAGE_TOKEN: 'stk_not-a-real-token' });
    expect([token.code, token.body.error.code]).toEqual([2, 'UNAUTHORIZED']);
  }, 900_000);

  it('keeps platforms apart: an index pushed whole, one platform distributed by index digest and --platform', async () => {
    const dir = await tmpDir('stowage-multi-');
    const layout = join(dir, 'layout');
    const index = await makeMultiPlatformLayout(layout, ['linux/amd64', 'linux/arm64/v8'], { tag: 'example.test/multi/app:1', layers: 1 });
    const tar = join(dir, 'multi.tar');
    await runOk('tar', ['-C', layout, '-cf', tar, '.']);
    const [amd, arm] = index.children;

    const push = await json<{ operation: Operation }>(['image', 'push', 'example.test/multi/app:1', '--archive', tar, '--to', 'agent-1']);
    expect(push.code, JSON.stringify(push.body)).toBe(0);
    expect(push.body.operation.artifact.digest).toBe(index.indexDigest);
    await cluster.waitForImage('agent-1', arm!.manifestDigest);
    const onOne = await json<{ records: Availability[] }>(['image', 'status', '--digest', index.indexDigest, '--machine', 'agent-1']);
    expect(onOne.body.records.map((r) => [r.platform, r.digest, r.index_digest])).toEqual(
      [
        ['linux/amd64', amd!.manifestDigest, index.indexDigest],
        ['linux/arm64/v8', arm!.manifestDigest, index.indexDigest],
      ].sort((a, b) => a[1]!.localeCompare(b[1]!)),
    );

    const dist = await json<{ operation: Operation }>(['image', 'distribute', '--digest', index.indexDigest, '--platform', 'linux/arm64/v8', '--from', 'agent-1', '--to', 'agent-2']);
    expect(dist.code, JSON.stringify(dist.body)).toBe(0);
    expect(dist.body.operation.targets[0]).toMatchObject({ machine_id: 'agent-2', status: 'present' });
    await cluster.waitForImage('agent-2', arm!.manifestDigest);
    // Only that platform went: availability is per platform manifest.
    const onTwo = await json<{ records: Availability[] }>(['image', 'status', '--digest', index.indexDigest, '--machine', 'agent-2']);
    expect(onTwo.body.records.map((r) => [r.platform, r.config_digest])).toEqual([['linux/arm64/v8', arm!.configDigest]]);

    // A platform the source does not hold is refused before anything starts.
    const missing = await json<{ error: { code: string } }>(['image', 'distribute', '--digest', index.indexDigest, '--platform', 'linux/s390x', '--from', 'agent-1', '--to', 'agent-3']);
    expect([missing.code, missing.body.error.code]).toEqual([1, 'PLATFORM_NOT_FOUND']);
  }, 900_000);

  it('an offline target fails with MACHINE_OFFLINE while the others succeed; exit 1', async () => {
    await cluster.killAgent('agent-3');
    await until(
      'stowctl machine list to show agent-3 offline',
      async () => {
        const m = await json<{ machines: Machine[] }>(['machine', 'list']);
        return m.body.machines.find((x) => x.id === 'agent-3')?.status === 'offline' ? true : undefined;
      },
      { timeoutMs: 20_000, everyMs: 200 },
    );
    const { tar } = await makeImageTar('example.test/late/app:1', { layers: 1 });
    const digest = await cluster.loadImage('agent-1', tar, 'example.test/late/app:1');
    const r = await json<{ operation: Operation }>(['image', 'distribute', '--digest', digest, '--from', 'agent-1', '--to', 'agent-2,agent-3']);
    expect(r.code).toBe(1);
    expect(r.body.operation.status).toBe('partially_failed');
    expect(r.body.operation.targets.map((t) => [t.machine_id, t.status, t.failure?.code])).toEqual([
      ['agent-2', 'present', undefined],
      ['agent-3', 'failed', 'MACHINE_OFFLINE'],
    ]);
    const status = await json<{ records: Availability[] }>(['image', 'status', '--digest', digest, '--machine', 'agent-3']);
    expect(status.body.records).toEqual([]);

    // A push whose first target is offline uploads to the first online one instead.
    const { tar: late } = await makeImageTar('example.test/late/push:1', { layers: 1 });
    const push = await json<{ operation: Operation }>(['image', 'push', 'example.test/late/push:1', '--archive', late, '--to', 'agent-3,agent-2']);
    expect(push.code).toBe(1);
    expect(push.body.operation.source_machine).toBe('agent-2');
    expect(push.body.operation.targets.map((t) => [t.machine_id, t.status, t.failure?.code])).toEqual([
      ['agent-2', 'present', undefined],
      ['agent-3', 'failed', 'MACHINE_OFFLINE'],
    ]);
  }, 900_000);
});
