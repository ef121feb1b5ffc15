import { afterAll, describe, expect, it } from 'vitest';
import { type DevCluster, startDevCluster } from '../../src/agent/dev-cluster.js';
import { run } from '../harness/run.js';
import { tmpDir } from '../harness/tmp.js';

/** `stowd dev --runtime containerd`: each agent beside a containerd of its own, stopped with the cluster. */

let cluster: DevCluster | undefined;

afterAll(async () => {
  await cluster?.close();
});

describe('stowd dev --runtime containerd', () => {
  it('starts one containerd per agent, each with its own socket, and stops them on close', async () => {
    cluster = await startDevCluster({ dataDir: await tmpDir('stowage-dev-ctd-'), agents: 2, controlPort: 0, basePort: 0, insecureRegistries: [], runtime: 'containerd' });
    const sockets = cluster.agents.map((a) => a.runtimeSocket);
    expect(new Set(sockets).size).toBe(2);
    for (const s of sockets) expect((await run('ctr', ['-a', s!, 'version'])).code).toBe(0);
    await cluster.close();
    cluster = undefined;
    for (const s of sockets) expect((await run('ctr', ['-a', s!, '--timeout', '2s', 'version'])).code).not.toBe(0);
  }, 120_000);
});
