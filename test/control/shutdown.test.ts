import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Cluster, startCluster, until } from '../harness/cluster.js';

/**
 * SIGTERM stops a control plane even when something it would wait for never ends: here a client that
 * sent a request's headers and part of its body, then nothing more (a stuck client, a half-open proxy
 * connection). The stop waits a grace period, then gives up and exits; nothing of the request is recorded.
 */

let cluster: Cluster;

beforeAll(async () => {
  cluster = await startCluster({ agents: 0 });
}, 300_000);

afterAll(async () => {
  await cluster?.close();
});

describe('stopping the control plane', () => {
  it('exits on SIGTERM within the grace period while a request body never finishes arriving', async () => {
    const url = new URL(cluster.controlUrl);
    const socket = connect(Number(url.port), url.hostname);
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    let answered = '';
    socket.on('data', (chunk: Buffer) => (answered += chunk.toString()));
    socket.on('error', () => {});
    const body = JSON.stringify({ digest: `sha256:${'a'.repeat(64)}`, from: 'nobody', to: ['nobody-else'] });
    socket.write(
      `POST /api/v1/operations/distribute HTTP/1.1\r\nHost: ${url.host}\r\nAuthorization: Bearer ${cluster.adminToken}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 10)}`,
    );
    // The request is in: the control plane is reading its body (nothing answered yet).
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(answered).toBe('');

    const started = Date.now();
    const exited = cluster.killControl('SIGTERM').then(() => Date.now() - started);
    // Far below the request's own timeout (5 minutes), which was all that ended the wait before.
    const ms = await Promise.race([exited, new Promise<number>((_, reject) => setTimeout(() => reject(new Error('still running 90 s after SIGTERM')), 90_000))]);
    expect(ms).toBeLessThan(90_000);
    socket.destroy();

    await cluster.startControl();
    const ops = await until('the control plane back', async () => (await cluster.api<{ operations: unknown[] }>('GET', '/api/v1/operations')).body.operations);
    expect(ops).toEqual([]);
  }, 300_000);
});
