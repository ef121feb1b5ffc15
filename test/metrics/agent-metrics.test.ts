import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Operation } from '../../src/control/wire.js';
import { type Cluster, type ClusterAgent, startCluster, until } from '../harness/cluster.js';
import { makeImageTar } from '../harness/images.js';
import { type Sample, scrape, valueOf } from '../harness/prometheus.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * An agent's GET /metrics on a live cluster: refused without the machine secret or the metrics token,
 * and the transfer series of the receiving machine (bytes by source, transfers by outcome, durations) and
 * the bytes the sending machine served move during a distribute.
 */

const LAYERS = 4;
const LAYER_BYTES = 512 * 1024;
const METRICS_TOKEN = 'smt_metrics-token-for-the-scraper';

let cluster: Cluster;
let digest: string;
let tokenFile: string;

const secretOf = async (agent: ClusterAgent): Promise<string> =>
  (JSON.parse(await readFile(join(agent.dataDir, 'identity.json'), 'utf8')) as { machine_secret: string }).machine_secret;

const agent = (name: string): ClusterAgent => {
  const a = cluster.agents.find((x) => x.name === name);
  if (!a) throw new Error(`no ${name}`);
  return a;
};

const metricsOf = async (name: string): Promise<Sample[]> => {
  const r = await scrape(agent(name).peerUrl, await secretOf(agent(name)));
  expect(r.status).toBe(200);
  return r.samples;
};

beforeAll(async () => {
  tokenFile = join(await tmpDir('stowage-metrics-token-'), 'metrics.token');
  await writeFile(tokenFile, `${METRICS_TOKEN}\n`, { mode: 0o600 });
  cluster = await startCluster({ agents: 2, maxTransferRate: 256 * 1024, agentArgs: (i) => (i === 1 ? ['--metrics-token-file', tokenFile] : []) });
  const { tar } = await makeImageTar('example.test/metrics/agent:1.0', { layers: LAYERS, layerBytes: LAYER_BYTES });
  digest = await cluster.loadImage('agent-1', tar, 'example.test/metrics/agent:1.0');
}, 900_000);

afterAll(async () => {
  await cluster?.close();
});

describe('agent /metrics', () => {
  it('answers the machine secret and the metrics token, and refuses anyone else', async () => {
    const a2 = agent('agent-2');
    expect((await scrape(a2.peerUrl)).status).toBe(401);
    expect((await scrape(a2.peerUrl, 'not-the-secret-nor-the-token')).status).toBe(401);
    expect((await scrape(a2.peerUrl, cluster.adminToken)).status).toBe(401);
    // Another machine's secret is not this one's.
    expect((await scrape(a2.peerUrl, await secretOf(agent('agent-1')))).status).toBe(401);
    expect((await scrape(a2.peerUrl, await secretOf(a2))).status).toBe(200);
    const byToken = await scrape(a2.peerUrl, METRICS_TOKEN);
    expect(byToken.status).toBe(200);
    expect(byToken.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    // agent-1 has no token file: the token is nothing there.
    expect((await scrape(agent('agent-1').peerUrl, METRICS_TOKEN)).status).toBe(401);
  });

  it('counts a transfer while it runs and once it ends, on both machines', async () => {
    const source = new URL(agent('agent-1').peerUrl).host;
    const before2 = await metricsOf('agent-2');
    const before1 = await metricsOf('agent-1');
    expect(valueOf(before1, 'stowage_agent_inventory_images')).toBeGreaterThanOrEqual(1);
    expect(before1.some((s) => s.name === 'stowage_nodejs_eventloop_lag_seconds')).toBe(true);
    // The Docker API is timed too: `docker load` put the image there, by route pattern.
    expect(valueOf(before1, 'stowage_http_request_duration_seconds_count', { server: 'docker', route: '/images/load', method: 'POST' })).toBeGreaterThanOrEqual(1);

    const created = await cluster.api<{ operation: Operation }>('POST', '/api/v1/operations/distribute', { digest, from: 'agent-1', to: ['agent-2'] });
    expect(created.status).toBe(202);
    await until('agent-2 to show a transfer running with bytes received', async () => {
      const s = await metricsOf('agent-2');
      return valueOf(s, 'stowage_agent_transfers_running') === 1 && valueOf(s, 'stowage_agent_received_bytes_total', { source }) > 0 ? true : undefined;
    });
    const op = await cluster.settle(created.body.operation.id);
    expect(op.status).toBe('succeeded');
    const moved = op.targets[0]?.bytes_transferred ?? 0;
    expect(moved).toBeGreaterThanOrEqual(LAYERS * LAYER_BYTES);

    // The final counts land as the transfer ends; the inventory gauge once the image is recorded.
    const after2 = await until('agent-2 to count the ended transfer', async () => {
      const s = await metricsOf('agent-2');
      return valueOf(s, 'stowage_agent_transfers_total', { status: 'present' }) > valueOf(before2, 'stowage_agent_transfers_total', { status: 'present' }) ? s : undefined;
    });
    const delta2 = (name: string, labels: Record<string, string> = {}) => valueOf(after2, name, labels) - valueOf(before2, name, labels);
    expect(delta2('stowage_agent_transfers_total', { status: 'present' })).toBe(1);
    expect(delta2('stowage_agent_transfer_duration_seconds_count', { status: 'present' })).toBe(1);
    expect(delta2('stowage_agent_received_bytes_total', { source })).toBe(moved);
    expect(valueOf(after2, 'stowage_agent_transfers_running')).toBe(0);
    expect(delta2('stowage_agent_inventory_images')).toBe(1);

    const after1 = await metricsOf('agent-1');
    expect(valueOf(after1, 'stowage_agent_served_bytes_total') - valueOf(before1, 'stowage_agent_served_bytes_total')).toBeGreaterThanOrEqual(moved);
    // The /v2/ blob route, by its pattern, on the machine that served.
    const v2 = after1.filter((s) => s.name === 'stowage_http_request_duration_seconds_count' && s.labels['route']?.startsWith('/v2/'));
    expect(v2.length).toBeGreaterThan(0);
    expect(v2.some((s) => s.labels['route']?.includes(digest))).toBe(false);
  });
});
