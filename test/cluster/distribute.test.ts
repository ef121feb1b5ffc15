import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Availability, Operation } from '../../src/control/wire.js';
import { type Cluster, startCluster, until } from '../harness/cluster.js';
import { makeImageTar } from '../harness/images.js';
import { runOk } from '../harness/run.js';

/**
 * distribute between real agent processes: targets pull from the source agent's /v2/, the control
 * plane records what they report, and the real docker CLI sees the same image on every target.
 */

let cluster: Cluster;
let digest: string;
let imageId: string;

beforeAll(async () => {
  cluster = await startCluster({ agents: 3 });
  const { tar } = await makeImageTar('example.test/team/app:1.0', { layers: 3, layerBytes: 256 * 1024 });
  const source = cluster.agents[0]!;
  // The agent reports the load to the control plane on its own.
  digest = await cluster.loadImage('agent-1', tar, 'example.test/team/app:1.0');
  imageId = (await runOk('docker', ['image', 'inspect', '--format', '{{.Id}}', 'example.test/team/app:1.0'], { env: { DOCKER_HOST: source.dockerHost } })).trim();
  const reported = await cluster.api<{ records: Availability[] }>('GET', `/api/v1/images/status?digest=${digest}&machine=agent-1`);
  expect(reported.body.records[0]?.config_digest).toBe(imageId);
}, 900_000);

afterAll(async () => {
  await cluster?.close();
});

describe('distribute', () => {
  it('moves the image machine to machine, and a second run moves nothing', async () => {
    const created = await cluster.api<{ operation: Operation }>('POST', '/api/v1/operations/distribute', { digest, from: 'agent-1', to: ['agent-2', 'agent-3'] });
    expect(created.status).toBe(202);
    expect(created.body.operation.id).toMatch(/^op-[0-9A-Z]{26}$/);
    const op = await cluster.settle(created.body.operation.id);
    expect(op.status).toBe('succeeded');
    expect(op.targets.map((t) => [t.machine_id, t.status])).toEqual([
      ['agent-2', 'present'],
      ['agent-3', 'present'],
    ]);
    for (const t of op.targets) expect(t.bytes_transferred).toBeGreaterThan(3 * 256 * 1024);

    for (const agent of cluster.agents.slice(1)) {
      const listed = await runOk('docker', ['images', '--no-trunc', '--format', '{{.Repository}}:{{.Tag}} {{.ID}}'], { env: { DOCKER_HOST: agent.dockerHost } });
      expect(listed).toContain(`example.test/team/app:1.0 ${imageId}`);
      await cluster.waitForImage(agent.name, digest);
    }
    const status = await cluster.api<{ records: Availability[] }>('GET', `/api/v1/images/status?digest=${digest}`);
    expect(status.body.records.filter((r) => r.presence.state === 'present').map((r) => r.machine_id).sort()).toEqual(['agent-1', 'agent-2', 'agent-3']);

    const again = await cluster.api<{ operation: Operation }>('POST', '/api/v1/operations/distribute', { digest, from: 'agent-1', to: ['agent-2'] });
    const second = await cluster.settle(again.body.operation.id);
    expect(second.status).toBe('succeeded');
    expect(second.targets[0]).toMatchObject({ machine_id: 'agent-2', status: 'skipped_present', bytes_transferred: 0 });
  }, 900_000);

  it('reports tag and delete through the Docker API to the control plane, exactly', async () => {
    const agent3 = cluster.agents[2]!;
    const refsOn = async (): Promise<string[] | undefined> => {
      const r = await cluster.api<{ records: Availability[] }>('GET', `/api/v1/images/status?digest=${digest}&machine=agent-3`);
      return r.body.records.find((x) => x.presence.state === 'present')?.references;
    };
    await runOk('docker', ['tag', 'example.test/team/app:1.0', 'example.test/team/app:prod'], { env: { DOCKER_HOST: agent3.dockerHost } });
    const tagged = await until('agent-3 to report the new tag', async () => {
      const refs = await refsOn();
      return refs?.includes('example.test/team/app:prod') ? refs : undefined;
    }, { timeoutMs: 15_000 });
    expect(tagged).toEqual(['example.test/team/app:1.0', 'example.test/team/app:prod']);
    await runOk('docker', ['rmi', 'example.test/team/app:1.0', 'example.test/team/app:prod'], { env: { DOCKER_HOST: agent3.dockerHost } });
    await until('agent-3 to report the image gone', async () => ((await refsOn()) === undefined ? true : undefined), { timeoutMs: 15_000 });
    await cluster.waitForImage('agent-3', digest, { absent: true });
  }, 900_000);

  it('refuses bad requests clearly and records nothing', async () => {
    const before = (await cluster.api<{ operations: Operation[] }>('GET', '/api/v1/operations')).body.operations.length;
    const unknown = await cluster.api<{ error: { code: string; message: string } }>('POST', '/api/v1/operations/distribute', {
      digest,
      from: 'agent-1',
      to: ['agent-9'],
    });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.code).toBe('MACHINE_NOT_FOUND');
    expect(unknown.body.error.message).toContain('agent-9');

    const lacking = await cluster.api<{ error: { code: string } }>('POST', '/api/v1/operations/distribute', {
      digest: `sha256:${'0'.repeat(64)}`,
      from: 'agent-1',
      to: ['agent-2'],
    });
    expect(lacking.status).toBe(404);
    expect(lacking.body.error.code).toBe('IMAGE_NOT_FOUND');

    const malformed = await cluster.api<{ error: { code: string; message: string } }>('POST', '/api/v1/operations/distribute', {
      digest: 'sha256:nothex',
      from: 'agent-1',
      to: ['agent-2'],
    });
    expect(malformed.status).toBe(400);
    expect(malformed.body.error.message).toContain('digest');

    const { request } = await import('undici');
    const wrong = await request(`${cluster.controlUrl}/api/v1/operations/distribute`, {
      method: 'POST',
      headers: { authorization: 'Bearer stk_wrong', 'content-type': 'application/json' },
      body: JSON.stringify({ digest, from: 'agent-1', to: ['agent-2'] }),
    });
    expect(wrong.statusCode).toBe(401);
    expect(((await wrong.body.json()) as { error: { code: string } }).error.code).toBe('UNAUTHORIZED');

    const after = (await cluster.api<{ operations: Operation[] }>('GET', '/api/v1/operations')).body.operations.length;
    expect(after).toBe(before);
  });
});
