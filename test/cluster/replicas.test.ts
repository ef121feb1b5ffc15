import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readSse } from '../../src/cli/sse.js';
import type { Availability, Machine, Operation, TaskEvent, UploadGrant } from '../../src/control/wire.js';
import { type Cluster, type ControlReplica, startCluster, until } from '../harness/cluster.js';
import { type TestImageInfo, makeImageTar, makeTestImage } from '../harness/images.js';
import { tmpDir } from '../harness/tmp.js';
import { freshDatabase } from '../harness/postgres.js';

/**
 * Two `stowd control` replicas on one PostgreSQL behind a load balancer (issue 15): agents report through
 * the balancer, an SSE stream on one replica follows work the other runs, and when the replica running a
 * distribute is killed the other takes it over once its lease expires and finishes it.
 *
 * Replica A is the cluster's first control plane (cluster.replicaUrl), B the one startReplica() adds.
 */

/** Transfers slow enough that a distribute is still under way when a replica is killed (a loaded box only slows them more). */
const RATE = 1024 * 1024;
const LAYERS = 3;
const LAYER_BYTES = 2 * 1024 * 1024;

let cluster: Cluster;
let replicaB: ControlReplica;

beforeAll(async () => {
  cluster = await startCluster({
    agents: 3,
    balancer: true,
    maxTransferRate: RATE,
    // Reports go on through the balancer while a replica dies: the machines must not go offline meanwhile.
    offlineAfterMs: 15_000,
    // A short lease: the survivor takes work over within a few seconds.
    control: { database: await freshDatabase(), operationLeaseMs: 3_000 },
  });
  replicaB = await cluster.startReplica();
}, 900_000);

afterAll(async () => {
  await cluster?.close();
});

async function loadedImage(name: string): Promise<string> {
  const { tar } = await makeImageTar(name, { layers: LAYERS, layerBytes: LAYER_BYTES });
  return cluster.loadImage('agent-1', tar, name);
}

/** An image stowctl could push: its files in an OCI layout, not on any machine. */
async function pushableImage(): Promise<{ img: TestImageInfo }> {
  const dir = await tmpDir('stowage-replicas-push-');
  return { img: await makeTestImage(dir, { layers: 1, layerBytes: 64 * 1024, tag: 'x' }) };
}

/** Collects an operation's SSE events from one replica until the stream ends. */
async function taskEvents(baseUrl: string, opId: string): Promise<Array<{ event: string; data: TaskEvent }>> {
  const res = await request(`${baseUrl}/api/v1/operations/${opId}/events`, {
    headers: { authorization: `Bearer ${cluster.adminToken}`, accept: 'text/event-stream' },
    bodyTimeout: 300_000,
  });
  expect(res.statusCode).toBe(200);
  const events: Array<{ event: string; data: TaskEvent }> = [];
  for await (const ev of readSse(res.body)) {
    if (ev.event === 'server_close') break;
    events.push({ event: ev.event, data: JSON.parse(ev.data) as TaskEvent });
  }
  return events;
}

describe('control-plane replicas on one PostgreSQL', () => {
  it('an SSE client on replica A sees the events of a distribute replica B runs', async () => {
    const digest = await loadedImage('example.test/replicas/sse:1');
    const created = await cluster.apiAt<{ operation: Operation }>(replicaB.url, 'POST', '/api/v1/operations/distribute', {
      digest,
      from: 'agent-1',
      to: ['agent-2'],
    });
    expect(created.status).toBe(202);
    const id = created.body.operation.id;

    const events = await taskEvents(cluster.replicaUrl, id);
    // A subscribed while B was still transferring: everything after the first event came from B's work.
    expect(events[0]?.event).toBe('bgtask_updated');
    expect(events[0]?.data.operation?.status).not.toBe('succeeded');
    const last = events.at(-1)!;
    expect(last.event).toBe('bgtask_done');
    expect(last.data.operation?.status).toBe('succeeded');
    expect(last.data.operation?.targets.map((t) => [t.machine_id, t.status])).toEqual([['agent-2', 'present']]);
    await cluster.waitForImage('agent-2', digest);
  }, 900_000);

  it('a cancel sent to replica B stops the distribute replica A runs: it ends cancelled and nothing is claimed', async () => {
    const digest = await loadedImage('example.test/replicas/cancel:1');
    const created = await cluster.apiAt<{ operation: Operation }>(cluster.replicaUrl, 'POST', '/api/v1/operations/distribute', {
      digest,
      from: 'agent-1',
      to: ['agent-2', 'agent-3'],
    });
    expect(created.status).toBe(202);
    const id = created.body.operation.id;
    await until('bytes to move on replica A', async () => {
      const o = await cluster.apiAt<{ operation: Operation }>(cluster.replicaUrl, 'GET', `/api/v1/operations/${id}`);
      return o.body.operation.targets.some((t) => t.bytes_transferred > 0) ? true : undefined;
    });
    // Frozen, the sources cannot finish the transfers before A has been told of the cancel.
    const sources = ['agent-1', 'agent-2'].map((name) => cluster.agents.find((a) => a.name === name)!.process);
    for (const p of sources) p.kill('SIGSTOP');
    let cancelled: { status: number; body: { operation: Operation } };
    try {
      cancelled = await cluster.apiAt<{ operation: Operation }>(replicaB.url, 'POST', `/api/v1/operations/${id}/cancel`);
    } finally {
      for (const p of sources) p.kill('SIGCONT');
    }
    expect(cancelled.status).toBe(200);
    expect(cancelled.body.operation.status).toBe('cancelled');
    // A stopped its run: it withdrew its claims of transfers under way, and wrote nothing over the cancel.
    await until('replica A to withdraw the transfers it had claimed', async () => {
      const r = await cluster.apiAt<{ records: Availability[] }>(cluster.replicaUrl, 'GET', `/api/v1/images/status?digest=${digest}`);
      return r.status === 200 && !r.body.records.some((x) => x.presence.state === 'transferring') ? true : undefined;
    });
    const after = await cluster.apiAt<{ operation: Operation }>(cluster.replicaUrl, 'GET', `/api/v1/operations/${id}`);
    expect(after.body.operation.status).toBe('cancelled');
    expect(after.body.operation.targets.map((t) => [t.machine_id, t.status, t.failure?.code])).toEqual([
      ['agent-2', 'failed', 'CANCELLED'],
      ['agent-3', 'failed', 'CANCELLED'],
    ]);
  }, 900_000);

  it("stowctl's upload report sent to replica B ends the push replica A runs", async () => {
    const { img } = await pushableImage();
    const created = await cluster.apiAt<{ operation: Operation; upload: UploadGrant | null }>(cluster.replicaUrl, 'POST', '/api/v1/operations/push', {
      digest: img.manifestDigest,
      reference: 'example.test/replicas/push:1',
      platform: 'linux/amd64',
      size_bytes: img.manifestSize + img.configSize + img.layers.reduce((n, l) => n + l.size, 0),
      to: ['agent-1', 'agent-2'],
      manifest: img.manifestBytes.toString('utf8'),
    });
    expect(created.status).toBe(201);
    expect(created.body.upload?.machine_id).toBe('agent-1');
    const id = created.body.operation.id;

    // Nothing is uploaded: only the report, sent to B, can end A's wait (its own deadline is an hour away).
    const reported = await cluster.apiAt(replicaB.url, 'POST', `/api/v1/operations/${id}/upload-finished`, {
      outcome: 'failed',
      failure: { code: 'CONNECTION_FAILED', message: 'stowctl lost its connection', stage: 'upload' },
    });
    expect(reported.status).toBe(200);

    const final = await cluster.settle(id);
    expect(final.status).toBe('failed');
    const upload = final.targets.find((t) => t.machine_id === 'agent-1');
    expect(upload?.status).toBe('failed');
    expect(upload?.failure?.code).toBe('CONNECTION_FAILED');
    expect(final.targets.every((t) => t.status === 'failed')).toBe(true);
  }, 900_000);

  it('SIGKILL of the replica running a distribute: the other takes it over and finishes it', async () => {
    const digest = await loadedImage('example.test/replicas/takeover:1');
    const created = await cluster.apiAt<{ operation: Operation }>(cluster.replicaUrl, 'POST', '/api/v1/operations/distribute', {
      digest,
      from: 'agent-1',
      to: ['agent-2', 'agent-3'],
    });
    expect(created.status).toBe(202);
    const id = created.body.operation.id;
    await until('the transfer to start on replica A', async () => {
      const o = await cluster.apiAt<{ operation: Operation }>(cluster.replicaUrl, 'GET', `/api/v1/operations/${id}`);
      return o.body.operation.targets.some((t) => t.status === 'running') ? true : undefined;
    });

    await cluster.killControl('SIGKILL');
    // A died mid-flight: B sees the operation unfinished, and carries it on once A's lease has expired.
    const orphaned = await cluster.apiAt<{ operation: Operation }>(replicaB.url, 'GET', `/api/v1/operations/${id}`);
    expect(['pending', 'running']).toContain(orphaned.body.operation.status);

    const final = await cluster.settle(id);
    expect(final.status).toBe('succeeded');
    expect(final.targets.map((t) => [t.machine_id, t.status])).toEqual([
      ['agent-2', 'present'],
      ['agent-3', 'present'],
    ]);
    await cluster.waitForImage('agent-2', digest);
    await cluster.waitForImage('agent-3', digest);
  }, 900_000);

  it('agents keep reporting through the surviving replica', async () => {
    // Heartbeats recorded after A died can only have come through B.
    const since = new Date().toISOString();
    await until('every machine to be heard from through replica B', async () => {
      const r = await cluster.apiAt<{ machines: Machine[] }>(replicaB.url, 'GET', '/api/v1/machines');
      const fresh = r.body.machines.filter((m) => m.status === 'online' && m.last_seen_at > since);
      return fresh.length === 3 ? true : undefined;
    });
    // A new image on a machine shows up in what the survivor knows.
    const { tar } = await makeImageTar('example.test/replicas/after:1', { layers: 1 });
    const digest = await cluster.loadImage('agent-3', tar, 'example.test/replicas/after:1');
    const status = await cluster.apiAt<{ records: Array<{ machine_id: string; presence: { state: string } }> }>(
      replicaB.url,
      'GET',
      `/api/v1/images/status?digest=${digest}`,
    );
    expect(status.body.records.map((r) => [r.machine_id, r.presence.state])).toEqual([['agent-3', 'present']]);
  }, 900_000);
});
