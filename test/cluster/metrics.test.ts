import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Operation } from '../../src/control/wire.js';
import { type Cluster, startCluster, until } from '../harness/cluster.js';
import { makeImageTar } from '../harness/images.js';
import { type Sample, scrape, valueOf } from '../harness/prometheus.js';

/**
 * The control plane's GET /metrics on a live cluster (real stowd processes): refused without an admin
 * API key, and its series move while a distribute runs and when it ends.
 */

const LAYERS = 4;
const LAYER_BYTES = 512 * 1024;

let cluster: Cluster;
let digest: string;

const metrics = async (): Promise<Sample[]> => {
  const r = await scrape(cluster.controlUrl, cluster.adminToken);
  expect(r.status).toBe(200);
  return r.samples;
};

beforeAll(async () => {
  // Capped downloads: the distribute runs for seconds, so a scrape sees it running.
  cluster = await startCluster({ agents: 3, maxTransferRate: 256 * 1024 });
  const { tar } = await makeImageTar('example.test/metrics/app:1.0', { layers: LAYERS, layerBytes: LAYER_BYTES });
  digest = await cluster.loadImage('agent-1', tar, 'example.test/metrics/app:1.0');
}, 900_000);

afterAll(async () => {
  await cluster?.close();
});

describe('control-plane /metrics', () => {
  it('refuses requests without an admin API key', async () => {
    expect((await scrape(cluster.controlUrl)).status).toBe(401);
    expect((await scrape(cluster.controlUrl, 'stk_not-a-key-anybody-holds')).status).toBe(401);
    expect((await scrape(cluster.controlUrl, cluster.joinToken)).status).toBe(401);
    const ok = await scrape(cluster.controlUrl, cluster.adminToken);
    expect(ok.status).toBe(200);
    expect(ok.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
  });

  it('shows machines, inventories and event-loop lag', async () => {
    // A loaded machine may delay a heartbeat past the offline window for a moment: wait for all three.
    const samples = await until('a scrape with the three machines online', async () => {
      const s = await metrics();
      return valueOf(s, 'stowage_machines', { status: 'online' }) === 3 ? s : undefined;
    });
    expect(valueOf(samples, 'stowage_machines')).toBe(3);
    expect(valueOf(samples, 'stowage_inventory_images', { machine: 'agent-1' })).toBeGreaterThanOrEqual(1);
    expect(valueOf(samples, 'stowage_inventory_bytes', { machine: 'agent-1' })).toBeGreaterThan(LAYERS * LAYER_BYTES);
    expect(samples.some((s) => s.name === 'stowage_nodejs_eventloop_lag_seconds')).toBe(true);
  });

  it('moves bytes, operation and duration series during and after a distribute', async () => {
    const before = await metrics();
    const created = await cluster.api<{ operation: Operation }>('POST', '/api/v1/operations/distribute', { digest, from: 'agent-1', to: ['agent-2', 'agent-3'] });
    expect(created.status).toBe(202);

    // While it runs: the operation counts as running and bytes are counted as they arrive.
    const during = await until('a scrape showing the distribute running with bytes moved', async () => {
      const s = await metrics();
      const running = valueOf(s, 'stowage_operations', { kind: 'distribute', status: 'running' });
      const moved = valueOf(s, 'stowage_transfer_bytes_total', { source: 'agent-1' });
      return running >= 1 && moved > valueOf(before, 'stowage_transfer_bytes_total', { source: 'agent-1' }) ? s : undefined;
    });
    expect(valueOf(during, 'stowage_operations', { kind: 'distribute', status: 'running' })).toBe(1);

    const op = await cluster.settle(created.body.operation.id);
    expect(op.status).toBe('succeeded');
    const after = await metrics();
    const delta = (name: string, labels: Record<string, string>) => valueOf(after, name, labels) - valueOf(before, name, labels);
    expect(delta('stowage_operations', { kind: 'distribute', status: 'succeeded' })).toBe(1);
    expect(valueOf(after, 'stowage_operations', { kind: 'distribute', status: 'running' })).toBe(0);
    expect(delta('stowage_operations_ended_total', { kind: 'distribute', status: 'succeeded' })).toBe(1);
    expect(delta('stowage_operation_duration_seconds_count', { kind: 'distribute', status: 'succeeded' })).toBe(1);
    expect(delta('stowage_operation_duration_seconds_sum', { kind: 'distribute', status: 'succeeded' })).toBeGreaterThan(0);
    expect(delta('stowage_transfer_duration_seconds_count', { kind: 'distribute', status: 'present' })).toBe(2);
    for (const target of ['agent-2', 'agent-3']) {
      const t = op.targets.find((x) => x.machine_id === target);
      expect(delta('stowage_transfer_bytes_total', { source: 'agent-1', target })).toBe(t?.bytes_transferred);
      expect(t?.bytes_transferred).toBeGreaterThanOrEqual(LAYERS * LAYER_BYTES);
    }
    // HTTP latency by route pattern, not by raw URL.
    expect(valueOf(after, 'stowage_http_request_duration_seconds_count', { route: '/api/v1/operations/distribute', method: 'POST', status_code: '202' })).toBeGreaterThanOrEqual(1);
    expect(valueOf(after, 'stowage_http_request_duration_seconds_count', { route: '/api/v1/operations/:id', method: 'GET' })).toBeGreaterThanOrEqual(1);
    expect(after.some((s) => s.labels['route']?.includes(op.id))).toBe(false);
    expect(valueOf(after, 'stowage_http_request_duration_seconds_count', { route: '/api/v1/machines/:id/heartbeat' })).toBeGreaterThan(0);
  });
});
