import { type Server, createServer } from 'node:http';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Availability, Operation } from '../../src/control/wire.js';
import { type Cluster, startCluster } from '../harness/cluster.js';
import { type RunnableImage, makeRunnableImage } from '../harness/containerd.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * Hand-over failures of the docker runtime: an agent whose Docker API socket is missing, and one whose engine
 * cuts the connection in the middle of the streamed `POST /images/load`. The target fails at stage `runtime`
 * with a clear code, the machine reports nothing of the image, and the agent keeps serving. A push whose
 * upload target cannot hand the image to its runtime fails that target at stage `runtime` too.
 *
 * agent-1: no runtime (the source). agent-2: a stand-in engine that resets the load. agent-3: no socket.
 */

const REF = 'docker.io/stowage-test/podfaults:1';

let cluster: Cluster;
let image: RunnableImage;
let engine: Server;
let loadBytes = 0;
let loadsCut = 0;

/** Answers the list and the event stream like an empty engine; resets every image load after 1 MiB. */
async function startCuttingEngine(socket: string): Promise<Server> {
  const server = createServer((req, res) => {
    const url = req.url ?? '';
    if (req.method === 'GET' && url.includes('/images/json')) {
      res.writeHead(200, { 'content-type': 'application/json' }).end('[]');
    } else if (req.method === 'GET' && url.includes('/events')) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write(''); // held open, like an engine with nothing happening
    } else if (req.method === 'POST' && url.includes('/images/load')) {
      let received = 0;
      req.on('data', (chunk: Buffer) => {
        received += chunk.length;
        loadBytes += chunk.length;
        if (received > 1024 * 1024 && !req.socket.destroyed) {
          loadsCut++;
          req.socket.destroy();
        }
      });
    } else {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    }
  });
  await new Promise<void>((resolve) => server.listen(socket, () => resolve()));
  return server;
}

async function status(machine: string): Promise<Availability[]> {
  const r = await cluster.api<{ records: Availability[] }>('GET', `/api/v1/images/status?machine=${machine}&digest=${image.manifestDigest}`);
  return r.body.records.filter((x) => x.presence.state === 'present');
}

async function online(machine: string): Promise<boolean> {
  const r = await cluster.api<{ machines: Array<{ id: string; status: string }> }>('GET', '/api/v1/machines');
  return r.body.machines.some((m) => m.id === machine && m.status === 'online');
}

async function distribute(to: string): Promise<Operation> {
  const r = await cluster.api<{ operation: Operation }>('POST', '/api/v1/operations/distribute', { digest: image.manifestDigest, from: 'agent-1', to: [to] });
  expect(r.status, JSON.stringify(r.body)).toBeLessThan(300);
  return cluster.settle(r.body.operation.id);
}

beforeAll(async () => {
  const dir = await tmpDir('stowage-podfaults-');
  engine = await startCuttingEngine(join(dir, 'engine.sock'));
  // 8 MiB of random layer bytes: the load is cut well before its end.
  image = await makeRunnableImage(REF, { extraLayers: 1, extraBytes: 8 * 1024 * 1024 });
  const sockets = [undefined, join(dir, 'engine.sock'), join(dir, 'missing.sock')];
  cluster = await startCluster({
    agents: 3,
    agentArgs: (i) => (sockets[i] ? ['--runtime', 'docker', '--docker-socket', sockets[i]] : []),
  });
  const push = await cluster.stowctl(['--json', 'image', 'push', REF, '--archive', image.tar, '--to', 'agent-1']);
  expect(push.code, push.stderr + push.stdout).toBe(0);
}, 240_000);

afterAll(async () => {
  await cluster?.close();
  await new Promise((resolve) => engine?.close(resolve));
});

describe('docker runtime hand-over failures', () => {
  it('a missing Docker API socket: the agent serves, and a distribute to it fails at stage runtime', async () => {
    expect(await online('agent-3')).toBe(true);
    const op = await distribute('agent-3');
    expect(op.status).toBe('failed');
    expect(op.targets[0]?.failure).toMatchObject({ code: 'RUNTIME_UNAVAILABLE', stage: 'runtime' });
    expect(op.targets[0]?.failure?.message).toContain('missing.sock');
    expect(await status('agent-3')).toEqual([]);
    expect(await online('agent-3')).toBe(true);
  }, 300_000);

  it('an engine that cuts the streamed load: failed at stage runtime, nothing reported, the agent keeps serving', async () => {
    const op = await distribute('agent-2');
    expect(loadsCut).toBeGreaterThan(0);
    expect(loadBytes).toBeLessThan(image.layerBytes);
    expect(op.targets[0]?.status).toBe('failed');
    expect(op.targets[0]?.failure).toMatchObject({ code: 'RUNTIME_UNAVAILABLE', stage: 'runtime' });
    expect(await status('agent-2')).toEqual([]);
    // The process is up and answers, and a second attempt fails the same way (no crash in between).
    const agent = cluster.agents[1]!;
    expect(agent.process.exitCode).toBeNull();
    const ping = await request(`${agent.dockerHost.replace('tcp://', 'http://')}/_ping`);
    expect(await ping.body.text()).toBe('OK');
    const again = await distribute('agent-2');
    expect(again.targets[0]?.failure).toMatchObject({ code: 'RUNTIME_UNAVAILABLE', stage: 'runtime' });
    expect(agent.process.exitCode).toBeNull();
    expect(await online('agent-2')).toBe(true);
  }, 300_000);

  it('a push to an agent that cannot hand the image to its runtime: that target failed at stage runtime, nothing reported', async () => {
    const push = await cluster.stowctl(['--json', 'image', 'push', REF, '--archive', image.tar, '--to', 'agent-3']);
    expect(push.code).toBe(1);
    const op = (JSON.parse(push.stdout) as { operation: Operation }).operation;
    const target = op.targets.find((t) => t.machine_id === 'agent-3');
    expect(target?.status).toBe('failed');
    expect(target?.failure).toMatchObject({ code: 'RUNTIME_UNAVAILABLE', stage: 'runtime' });
    // The uploaded blobs are in the agent's store, but the machine does not report an image its runtime lacks.
    const inventory = await cluster.api<{ records: Availability[] }>('GET', `/api/v1/images/status?machine=agent-3`);
    expect(inventory.body.records.filter((r) => r.presence.state === 'present')).toEqual([]);
    expect(await online('agent-3')).toBe(true);
  }, 300_000);
});
