import { sql } from 'kysely';
import { copyFile, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../../src/control/db/database.js';
import { RegistryStore } from '../../src/control/catalog/registries.js';
import { Machines } from '../../src/control/machines.js';
import { mintPeerToken } from '../../src/control/peer-token.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import pg from 'pg';
import { type Cluster, startCluster, until } from '../harness/cluster.js';
import { freshDatabase, postgresBinDir } from '../harness/postgres.js';
import { tmpDir } from '../harness/tmp.js';

// Issue 13, defect 4: control.db and its -wal/-shm were 0644 in a 0755 directory and held every machine
// secret and registry password in the clear; one machine secret opened that machine's /agent/v1.
const REGISTRY_PASSWORD = 'registry-pw-that-must-not-leak-7f3a9c';

const modeOf = async (path: string): Promise<number> => (await stat(path)).mode & 0o777;

/** A cluster of one agent with a registry password seeded, and the machine secret the agent keeps. */
async function seededCluster(database?: string): Promise<{ cluster: Cluster; machineSecret: string }> {
  const cluster = await startCluster({
    agents: 1,
    control: {
      ...(database ? { database } : {}),
      seed: { registries: [{ name: 'registry.test:5000', url: 'http://registry.test:5000', username: 'ci', password: REGISTRY_PASSWORD }] },
    },
  });
  const agentDir = cluster.agents[0]!.dataDir;
  // Written by the agent once the join is answered, which may be just after the control plane saw it.
  const machineSecret = await until('the agent to keep its identity', async () => (JSON.parse(await readFile(join(agentDir, 'identity.json'), 'utf8')) as { machine_secret: string }).machine_secret);
  return { cluster, machineSecret };
}

/** The sealed secret, as a thief reads it from the database, is refused by the agent's API and the heartbeat route. */
async function expectSealedSecretRefused(cluster: Cluster, sealed: string): Promise<void> {
  expect(sealed.startsWith('sbx1.')).toBe(true);
  const agentApi = await request(`${cluster.agents[0]!.peerUrl}/agent/v1/inventory`, { headers: { authorization: `Bearer ${sealed}` } });
  await agentApi.body.dump();
  expect(agentApi.statusCode).toBe(401);
  const heartbeat = await request(`${cluster.controlUrl}/api/v1/machines/agent-1/heartbeat`, {
    method: 'POST',
    headers: { authorization: `Bearer ${sealed}`, 'content-type': 'application/json' },
    body: '{}',
  });
  await heartbeat.body.dump();
  expect(heartbeat.statusCode).toBe(401);
}

/** The machine's real secret still opens its agent's API. */
async function expectSecretAccepted(cluster: Cluster, machineSecret: string): Promise<void> {
  const real = await request(`${cluster.agents[0]!.peerUrl}/agent/v1/inventory`, { headers: { authorization: `Bearer ${machineSecret}` } });
  await real.body.dump();
  expect(real.statusCode).toBe(200);
}

describe('secrets at rest on a running cluster', () => {
  let cluster: Cluster;
  let machineSecret: string;

  beforeAll(async () => {
    ({ cluster, machineSecret } = await seededCluster());
  }, 120_000);
  afterAll(async () => {
    await cluster?.close();
  });

  it('keeps state directories 0700 and every database, key and token file 0600', async () => {
    const control = join(cluster.root, 'control');
    expect(await modeOf(control)).toBe(0o700);
    for (const f of ['control.db', 'control.db-wal', 'control.db-shm', 'secrets.key', 'join.token', 'admin.token']) {
      expect([f, await modeOf(join(control, f))]).toEqual([f, 0o600]);
    }
    const agent = cluster.agents[0]!.dataDir;
    expect(await modeOf(agent)).toBe(0o700);
    expect(await modeOf(join(agent, 'identity.json'))).toBe(0o600);
  });

  it('stores neither the machine secret nor the registry password in the clear', async () => {
    const control = join(cluster.root, 'control');
    const bytes = Buffer.concat([await readFile(join(control, 'control.db')), await readFile(join(control, 'control.db-wal'))]);
    expect(machineSecret).toMatch(/^sms_/);
    expect(bytes.includes(machineSecret)).toBe(false);
    expect(bytes.includes(REGISTRY_PASSWORD)).toBe(false);
  });

  it('a copy of the database grants nothing: its sealed secret is refused by the agent and the control plane', async () => {
    const copy = join(await tmpDir('stolen-db-'), 'control.db');
    const control = join(cluster.root, 'control');
    // What a thief takes: the database and its WAL, not the 0600 key file.
    await copyFile(join(control, 'control.db'), copy);
    await copyFile(join(control, 'control.db-wal'), `${copy}-wal`);
    const stolen = new Database(copy, { readonly: true });
    const row = stolen.prepare('SELECT secret FROM machines WHERE id = ?').get('agent-1') as { secret: string };
    stolen.close();
    await expectSealedSecretRefused(cluster, row.secret);

    const agent = cluster.agents[0]!;
    const forged = mintPeerToken(row.secret, { m: 'agent-1', s: 'push', t: true, exp: Math.floor(Date.now() / 1000) + 600 });
    const v2 = await request(`${agent.peerUrl}/v2/`, { headers: { authorization: `Basic ${Buffer.from(`x:${forged}`).toString('base64')}` } });
    await v2.body.dump();
    expect(v2.statusCode).toBe(401);

    // Nothing changed: the real secret still works and the machine is online.
    await expectSecretAccepted(cluster, machineSecret);
    const machines = await cluster.api<{ machines: Array<{ id: string; status: string }> }>('GET', '/api/v1/machines');
    expect(machines.body.machines.find((m) => m.id === 'agent-1')?.status).toBe('online');
  });
});

describe('a database written before sealing', () => {
  it('has its plain machine secrets and registry passwords sealed at the next start, still usable', async () => {
    const dir = await tmpDir('legacy-db-');
    const path = join(dir, 'control.db');
    const first = await openDatabase(path);
    const { secret } = await new Machines(first, 20_000).join({ join_token: 'unused', name: 'old-1', agent_url: 'http://127.0.0.1:1', platform: 'linux/amd64', labels: {}, inventory_seq: 0, inventory: [] });
    await new RegistryStore(first).put({ name: 'old.registry:5000', username: 'u', password: REGISTRY_PASSWORD });
    // As an older version left them: in the clear.
    await first.run(sql`UPDATE machines SET secret = ${secret} WHERE id = ${'old-1'}`);
    await first.run(sql`UPDATE registries SET password = ${REGISTRY_PASSWORD} WHERE name = ${'old.registry:5000'}`);
    await first.close();

    const db = await openDatabase(path);
    // What a start does first (control.ts).
    const machines = new Machines(db, 20_000);
    await machines.sealPlainSecrets();
    const registries = new RegistryStore(db);
    await registries.sealPlainPasswords();
    expect((await machines.authenticate('old-1', secret))?.id).toBe('old-1');
    expect((await registries.get('old.registry:5000'))?.password).toBe(REGISTRY_PASSWORD);
    const raw = (await db.get<{ s: string; p: string }>(sql`SELECT (SELECT secret FROM machines WHERE id = 'old-1') AS s, (SELECT password FROM registries) AS p`))!;
    expect(raw.s.startsWith('sbx1.')).toBe(true);
    expect(raw.p.startsWith('sbx1.')).toBe(true);
    await db.close();
    const bytes = Buffer.concat([await readFile(path), await readFile(`${path}-wal`).catch(() => Buffer.alloc(0))]);
    expect(bytes.includes(secret)).toBe(false);
    expect(bytes.includes(REGISTRY_PASSWORD)).toBe(false);
  });
});

describe('secrets at rest on a cluster whose state is in PostgreSQL', () => {
  let cluster: Cluster;
  let database: string;
  let machineSecret: string;

  beforeAll(async () => {
    database = await freshDatabase();
    ({ cluster, machineSecret } = await seededCluster(database));
  }, 300_000);
  afterAll(async () => {
    await cluster?.close();
  });

  it('a dump of the database holds neither the machine secret nor the registry password, and its sealed secret opens nothing', async () => {
    // What a backup or a thief with database access gets: everything in it, not the 0600 key file.
    const bin = postgresBinDir();
    if (!bin) throw new Error('PostgreSQL client tools are not installed');
    const { stdout: dump } = await promisify(execFile)(join(bin, 'pg_dump'), ['--data-only', database], { maxBuffer: 64 * 1024 * 1024 });
    expect(dump).toContain('agent-1');
    expect(dump.includes(machineSecret)).toBe(false);
    expect(dump.includes(REGISTRY_PASSWORD)).toBe(false);
    expect(await modeOf(join(cluster.root, 'control', 'secrets.key'))).toBe(0o600);

    const client = new pg.Client({ connectionString: database });
    await client.connect();
    const sealed = (await client.query<{ secret: string }>('SELECT secret FROM machines WHERE id = $1', ['agent-1'])).rows[0]!.secret;
    await client.end();
    await expectSealedSecretRefused(cluster, sealed);
    await expectSecretAccepted(cluster, machineSecret);
  });
});
