import { afterAll, describe, expect, it } from 'vitest';
import { type DevCluster, startDevCluster } from '../../src/agent/dev-cluster.js';
import { run } from '../harness/run.js';
import { tmpDir } from '../harness/tmp.js';

/** `stowd dev --runtime podman`: each agent beside a Podman service of its own, stopped with the cluster. */

let cluster: DevCluster | undefined;

afterAll(async () => {
  await cluster?.close();
});

describe('stowd dev --runtime podman', () => {
  it('starts one Podman service per agent, each with its own socket, and stops them on close', async () => {
    cluster = await startDevCluster({ dataDir: await tmpDir('stowage-dev-podman-'), agents: 2, controlPort: 0, basePort: 0, insecureRegistries: [], runtime: 'podman' });
    const sockets = cluster.agents.map((a) => a.runtimeSocket);
    expect(new Set(sockets).size).toBe(2);
    for (const s of sockets) expect((await run('podman', ['--url', `unix://${s!}`, 'version'], {}, { timeoutMs: 60_000 })).code).toBe(0);
    await cluster.close();
    cluster = undefined;
    for (const s of sockets) expect((await run('podman', ['--url', `unix://${s!}`, 'version'], {}, { timeoutMs: 60_000 })).code).not.toBe(0);
  }, 400_000);
});
