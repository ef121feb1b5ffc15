import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Operation } from '../../src/control/wire.js';
import { type Cluster, startCluster, until } from '../harness/cluster.js';
import { makeImageTar } from '../harness/images.js';

/**
 * Pipelined, peer-to-peer fan-out between real agent processes: targets pull along a chain, each serving
 * the next from its /v2/ while its own blobs still arrive, so the source uploads about one copy whatever the
 * number of targets; a target killed in the middle of the chain leaves the ones after it to finish from
 * another holder; and peer tokens far shorter than a transfer are renewed while it runs.
 *
 * Downloads are capped per agent (the harness's --max-transfer-rate) so transfers last long enough to be
 * interrupted; nothing here asserts a duration.
 */

const RATE = 512 * 1024;
const TTL_SECONDS = 10; // the shortest peer-token lifetime the control plane accepts
const SLOW = { timeoutMs: 120_000, everyMs: 50 };

let cluster: Cluster;

beforeAll(async () => {
  cluster = await startCluster({ agents: 5, maxTransferRate: RATE, control: { peerTokenTtlSeconds: TTL_SECONDS } });
}, 120_000);

afterAll(async () => {
  await cluster?.close();
});

async function op(id: string): Promise<Operation> {
  return (await cluster.api<{ operation: Operation }>('GET', `/api/v1/operations/${id}`)).body.operation;
}

/** Blob bytes an agent's /v2/ has sent since it started. */
async function served(name: string): Promise<number> {
  const agent = cluster.agents.find((a) => a.name === name);
  const ids = await cluster.api<{ machines: Array<{ id: string; secret?: string }> }>('GET', '/api/v1/machines');
  expect(ids.status).toBe(200);
  // The machine secret is the agent's own, in its identity file.
  const { readFile } = await import('node:fs/promises');
  const identity = JSON.parse(await readFile(`${agent!.dataDir}/identity.json`, 'utf8')) as { machine_secret: string };
  const res = await request(`${agent!.peerUrl}/agent/v1/stats`, { headers: { authorization: `Bearer ${identity.machine_secret}` } });
  expect(res.statusCode).toBe(200);
  return ((await res.body.json()) as { blob_bytes_served: number }).blob_bytes_served;
}

async function load(name: string, layers: number, layerBytes: number): Promise<{ digest: string; bytes: number }> {
  const { tar } = await makeImageTar(name, { layers, layerBytes });
  const digest = await cluster.loadImage('agent-1', tar, name);
  return { digest, bytes: layers * layerBytes };
}

describe('pipelined fan-out', () => {
  it('moves an image to four machines along a chain: the source uploads about one copy, every target verifies and holds it', async () => {
    const { digest, bytes } = await load('example.test/fanout/chain:1', 3, 1024 * 1024);
    const before = await Promise.all(['agent-1', 'agent-2', 'agent-3', 'agent-4'].map(served));
    const created = await cluster.api<{ operation: Operation }>('POST', '/api/v1/operations/distribute', {
      digest,
      from: 'agent-1',
      to: ['agent-2', 'agent-3', 'agent-4', 'agent-5'],
    });
    expect(created.status).toBe(202);
    const final = await cluster.settle(created.body.operation.id, SLOW.timeoutMs);
    expect(final.status).toBe('succeeded');
    expect(final.targets.map((t) => t.status)).toEqual(['present', 'present', 'present', 'present']);
    for (const t of final.targets) await cluster.waitForImage(t.machine_id, digest);

    const after = await Promise.all(['agent-1', 'agent-2', 'agent-3', 'agent-4'].map(served));
    const sent = after.map((n, i) => n - (before[i] as number));
    // Without the chain the source would send four copies; with it, one (plus the configs). Each of the
    // first three targets passed one copy on to the next.
    expect(sent[0]).toBeGreaterThanOrEqual(bytes);
    expect(sent[0]).toBeLessThan(1.5 * bytes);
    for (const s of sent.slice(1)) expect(s).toBeGreaterThanOrEqual(0.5 * bytes);
  }, 180_000);

  it('renews peer tokens for a transfer that outlasts them', async () => {
    // Nine layers of 1 MiB at 512 KiB/s, three at a time: the last three are asked for after the first
    // token has expired (10 s), and are served only with a renewed one.
    const { digest } = await load('example.test/fanout/long:1', 9, 1024 * 1024);
    const created = await cluster.api<{ operation: Operation }>('POST', '/api/v1/operations/distribute', { digest, from: 'agent-1', to: ['agent-2'] });
    const final = await cluster.settle(created.body.operation.id, SLOW.timeoutMs);
    expect(final.targets[0]).toMatchObject({ machine_id: 'agent-2', status: 'present' });
    expect(final.status).toBe('succeeded');
    expect(Date.parse(final.updated_at) - Date.parse(final.created_at)).toBeGreaterThan(TTL_SECONDS * 1000);
    await cluster.waitForImage('agent-2', digest);
  }, 180_000);

  it('a machine killed (SIGKILL) in the middle of the chain fails alone; the ones after it resume from another holder and finish', async () => {
    const { digest } = await load('example.test/fanout/crash:1', 3, 2 * 1024 * 1024);
    const created = await cluster.api<{ operation: Operation }>('POST', '/api/v1/operations/distribute', {
      digest,
      from: 'agent-1',
      to: ['agent-2', 'agent-3', 'agent-4', 'agent-5'],
    });
    const id = created.body.operation.id;
    // agent-4 pulls from agent-3, which is still receiving: both have bytes, neither is done.
    await until('agent-4 to receive bytes through agent-3', async () => {
      const o = await op(id);
      const three = o.targets.find((t) => t.machine_id === 'agent-3');
      const four = o.targets.find((t) => t.machine_id === 'agent-4');
      return three?.status === 'running' && four?.status === 'running' && four.bytes_transferred > 0 ? o : undefined;
    }, SLOW);
    await cluster.killAgent('agent-3', 'SIGKILL');

    const final = await cluster.settle(id, SLOW.timeoutMs);
    expect(final.status).toBe('partially_failed');
    expect(final.targets.map((t) => [t.machine_id, t.status])).toEqual([
      ['agent-2', 'present'],
      ['agent-3', 'failed'],
      ['agent-4', 'present'],
      ['agent-5', 'present'],
    ]);
    for (const name of ['agent-2', 'agent-4', 'agent-5']) await cluster.waitForImage(name, digest);
    await cluster.startAgent('agent-3');
  }, 180_000);
});
