import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Availability, Operation } from '../../src/control/wire.js';
import { type Cluster, startCluster } from '../harness/cluster.js';
import { makeImageTar } from '../harness/images.js';
import { runOk } from '../harness/run.js';

/**
 * distribute between real agent processes: targets pull from the source agent's /v2/, the control
 * plane records what they report, and the real docker CLI sees the same image on every target.
 */

let cluster: Cluster;
let digest: string;
let imageId: string;

async function settle(id: string): Promise<Operation> {
  const until = Date.now() + 60_000;
  for (;;) {
    const r = await cluster.api<{ operation: Operation }>('GET', `/api/v1/operations/${id}`);
    if (['succeeded', 'partially_failed', 'failed', 'cancelled'].includes(r.body.operation.status)) return r.body.operation;
    if (Date.now() > until) throw new Error(`operation ${id} did not end: ${JSON.stringify(r.body)}`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

beforeAll(async () => {
  cluster = await startCluster({ agents: 3 });
  const { tar } = await makeImageTar('example.test/team/app:1.0', { layers: 3, layerBytes: 256 * 1024 });
  const source = cluster.agents[0]!;
  await runOk('docker', ['load', '-i', tar], { env: { DOCKER_HOST: source.dockerHost } });
  imageId = (await runOk('docker', ['image', 'inspect', '--format', '{{.Id}}', 'example.test/team/app:1.0'], { env: { DOCKER_HOST: source.dockerHost } })).trim();
  // The agent reports the load to the control plane on its own.
  const until = Date.now() + 15_000;
  for (;;) {
    const r = await cluster.api<{ records: Availability[] }>('GET', '/api/v1/images/status?machine=agent-1');
    const rec = r.body.records.find((x) => x.references.includes('example.test/team/app:1.0'));
    if (rec) {
      digest = rec.digest;
      expect(rec.config_digest).toBe(imageId);
      break;
    }
    if (Date.now() > until) throw new Error('agent-1 never reported the loaded image');
    await new Promise((res) => setTimeout(res, 100));
  }
}, 120_000);

afterAll(async () => {
  await cluster?.close();
});

describe('distribute', () => {
  it('moves the image machine to machine, and a second run moves nothing', async () => {
    const created = await cluster.api<{ operation: Operation }>('POST', '/api/v1/operations/distribute', { digest, from: 'agent-1', to: ['agent-2', 'agent-3'] });
    expect(created.status).toBe(202);
    expect(created.body.operation.id).toMatch(/^op-[0-9A-Z]{26}$/);
    const op = await settle(created.body.operation.id);
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
    const second = await settle(again.body.operation.id);
    expect(second.status).toBe('succeeded');
    expect(second.targets[0]).toMatchObject({ machine_id: 'agent-2', status: 'skipped_present', bytes_transferred: 0 });
  }, 120_000);

  it('reports tag and delete through the Docker API to the control plane, exactly', async () => {
    const agent3 = cluster.agents[2]!;
    const refsOn = async (): Promise<string[] | undefined> => {
      const r = await cluster.api<{ records: Availability[] }>('GET', `/api/v1/images/status?digest=${digest}&machine=agent-3`);
      return r.body.records.find((x) => x.presence.state === 'present')?.references;
    };
    await runOk('docker', ['tag', 'example.test/team/app:1.0', 'example.test/team/app:prod'], { env: { DOCKER_HOST: agent3.dockerHost } });
    const until = async (ok: (refs: string[] | undefined) => boolean): Promise<string[] | undefined> => {
      for (let i = 0; i < 150; i++) {
        const refs = await refsOn();
        if (ok(refs)) return refs;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`agent-3 references stayed ${JSON.stringify(await refsOn())}`);
    };
    expect(await until((refs) => refs?.includes('example.test/team/app:prod') === true)).toEqual(['example.test/team/app:1.0', 'example.test/team/app:prod']);
    await runOk('docker', ['rmi', 'example.test/team/app:1.0', 'example.test/team/app:prod'], { env: { DOCKER_HOST: agent3.dockerHost } });
    expect(await until((refs) => refs === undefined)).toBeUndefined();
    await cluster.waitForImage('agent-3', digest, { absent: true });
  }, 60_000);

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
