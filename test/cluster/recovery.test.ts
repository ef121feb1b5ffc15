import { copyFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Availability, Machine } from '../../src/control/wire.js';
import { type Cluster, startCluster, until } from '../harness/cluster.js';
import { makeImageTar } from '../harness/images.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * The control plane's state lost or rolled back: the agents notice on their own (a refused secret, a
 * sequence number that does not follow) and bring it back to what they really hold.
 */

let cluster: Cluster;

async function load(name: string): Promise<string> {
  const { tar } = await makeImageTar(name, { layers: 1 });
  return cluster.loadImage('agent-1', tar, name);
}

const dbFiles = ['control.db', 'control.db-wal', 'control.db-shm'];

beforeAll(async () => {
  cluster = await startCluster({ agents: 2 });
}, 900_000);

afterAll(async () => {
  await cluster?.close();
});

describe('control-plane state lost or rolled back', () => {
  it('a database restored from before a change is caught up by the agent (resync)', async () => {
    const first = await load('example.test/recover/one:1');
    await cluster.killControl();
    const backup = await tmpDir('stowage-backup-');
    for (const f of dbFiles) await copyFile(join(cluster.root, 'control', f), join(backup, f)).catch(() => undefined);
    await cluster.startControl();

    const second = await load('example.test/recover/two:1');
    await cluster.killControl();
    for (const f of dbFiles) {
      await rm(join(cluster.root, 'control', f), { force: true });
      await copyFile(join(backup, f), join(cluster.root, 'control', f)).catch(() => undefined);
    }
    await cluster.startControl();
    // The restored state knows only the first image until agent-1's next heartbeat asks for everything.
    const digests = await until('agent-1 to resync', async () => {
      const r = await cluster.api<{ records: Availability[] }>('GET', '/api/v1/images/status?machine=agent-1');
      const d = r.body.records.map((x) => x.digest);
      return d.includes(second) ? d : undefined;
    });
    expect(digests).toContain(first);
  }, 900_000);

  it('a lost database: the agents join again with the join token and report everything they hold', async () => {
    const held = await load('example.test/recover/three:1');
    await cluster.killControl();
    for (const f of dbFiles) await rm(join(cluster.root, 'control', f), { force: true });
    await cluster.startControl();
    // The admin token on disk still works, and both machines are back under their names.
    const machines = await until('both agents to rejoin', async () => {
      const r = await cluster.api<{ machines: Machine[] }>('GET', '/api/v1/machines');
      return r.status === 200 && r.body.machines.filter((m) => m.status === 'online').length === 2 ? r.body.machines : undefined;
    });
    expect(machines.map((m) => m.id)).toEqual(['agent-1', 'agent-2']);
    await cluster.waitForImage('agent-1', held);
    const status = await cluster.api<{ records: Availability[] }>('GET', '/api/v1/images/status?machine=agent-1');
    expect(status.body.records.length).toBeGreaterThanOrEqual(3);
  }, 900_000);
});
