import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Operation } from '../../src/control/wire.js';
import { type Cluster, startCluster } from '../harness/cluster.js';

// Issue 13, defect 9: `platform: "../../x"` in a distribute and `size_bytes: 1e300` in a push were accepted and stored.
describe('input schemas on the control plane', () => {
  let cluster: Cluster;
  beforeAll(async () => {
    cluster = await startCluster({ agents: 1 });
  }, 120_000);
  afterAll(async () => {
    await cluster?.close();
  });

  it('refuses a platform outside os/arch[/variant] and sizes beyond a safe integer, storing nothing', async () => {
    const digest = `sha256:${'a'.repeat(64)}`;
    const before = (await cluster.api<{ operations: Operation[] }>('GET', '/api/v1/operations')).body.operations;
    const attempts: Array<[string, unknown]> = [
      ['/api/v1/operations/distribute', { digest, from: 'agent-1', to: ['agent-1'], platform: '../../x' }],
      ['/api/v1/operations/distribute', { digest, from: 'agent-1', to: ['agent-1'], platform: 'linux/amd64/v8/extra' }],
      ['/api/v1/operations/distribute', { digest, from: 'agent-1', to: ['agent-1'], platform: 'linux/am d64' }],
      ['/api/v1/operations/push', { digest, size_bytes: 1e300, to: ['agent-1'] }],
      ['/api/v1/operations/push', { digest, size_bytes: 2 ** 53, to: ['agent-1'] }],
      ['/api/v1/operations/push', { digest, size_bytes: -1, to: ['agent-1'] }],
      ['/api/v1/operations/push', { digest, size_bytes: 10, to: ['agent-1'], platform: '../../x' }],
    ];
    for (const [path, body] of attempts) {
      const res = await cluster.api<{ error: { code: string; message: string } }>('POST', path, body);
      expect([path, body, res.status, res.body.error.code]).toEqual([path, body, 400, 'BAD_REQUEST']);
    }
    const distribute = await cluster.api<{ error: { message: string } }>('POST', '/api/v1/operations/distribute', attempts[0]![1]);
    expect(distribute.body.error.message).toMatch(/platform/);
    expect((await cluster.api<{ operations: Operation[] }>('GET', '/api/v1/operations')).body.operations).toEqual(before);
    // A well-formed platform still gets past the schema (to the next check: no such image on agent-1).
    const ok = await cluster.api<{ error?: { code: string } }>('POST', '/api/v1/operations/distribute', { digest, from: 'agent-1', to: ['agent-1'], platform: 'linux/arm64/v8' });
    expect(ok.body.error?.code).not.toBe('BAD_REQUEST');
  }, 60_000);
});
