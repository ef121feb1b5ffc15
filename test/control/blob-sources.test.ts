import { join } from 'node:path';
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { blobSources } from '../../src/control/blob-sources.js';
import { parseControlConfig } from '../../src/control/config.js';
import { startControl } from '../../src/control/control.js';
import { Machines } from '../../src/control/machines.js';
import { verifyPeerToken } from '../../src/control/peer-token.js';
import type { InventoryItem, JoinRequest } from '../../src/control/wire.js';
import { until } from '../harness/cluster.js';
import { freshTestDb } from '../harness/control-db.js';
import { controlDatabase } from '../harness/postgres.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * Where a blob can be read in the cluster (what an agent's pull-through mirror asks): from the layers and
 * configs the machines' inventories report, online holders only, never the asking machine, each with a pull
 * token that its own /v2/ accepts.
 */

const hex = (c: string) => `sha256:${c.repeat(64)}`;
const LAYER_A = hex('a');
const LAYER_B = hex('b');
const CONFIG = hex('c');
const NOWHERE = hex('d');

function item(digest: string, layers: string[] | undefined, config = CONFIG): InventoryItem {
  return { digest, config_digest: config, platform: 'linux/amd64', references: ['docker.io/team/app:1'], size_bytes: 10, ...(layers ? { layers } : {}) };
}

function joinReq(name: string, inventory: InventoryItem[]): JoinRequest {
  return { join_token: 'x', name, agent_url: `http://${name}.test:5080`, platform: 'linux/amd64', labels: {}, inventory, inventory_seq: 1 };
}

describe('blob sources', () => {
  it('names the online machines holding each blob, with pull tokens for them, and never the one asking', async () => {
    const db = await freshTestDb('stowage-blob-sources-');
    const machines = new Machines(db, 60_000);
    await machines.join(joinReq('holder', [item(hex('1'), [LAYER_A, LAYER_B])]));
    const asker = await machines.join(joinReq('asker', [item(hex('2'), [LAYER_A])]));
    await machines.join(joinReq('old-agent', [item(hex('3'), undefined)])); // reports no layers: holds nothing known

    const { sources } = await blobSources(db, machines, 'asker', [LAYER_A, LAYER_B, CONFIG, NOWHERE], 300);
    expect(Object.keys(sources).sort()).toEqual([LAYER_A, LAYER_B, CONFIG, NOWHERE].sort());
    expect(sources[LAYER_A]?.map((s) => s.machine_id)).toEqual(['holder']);
    expect(sources[LAYER_B]?.map((s) => s.machine_id)).toEqual(['holder']);
    // Every machine has the config; the asker is left out.
    expect(sources[CONFIG]?.map((s) => s.machine_id).sort()).toEqual(['holder', 'old-agent']);
    expect(sources[NOWHERE]).toEqual([]);

    const from = sources[LAYER_A]![0]!;
    expect(from).toMatchObject({ registry_url: 'http://holder.test:5080', repository: 'team/app', username: 'stowage' });
    const holder = await machines.require('holder');
    expect(verifyPeerToken(holder.secret, 'holder', from.password!, 'pull')).toBeDefined();
    expect(verifyPeerToken(holder.secret, 'holder', from.password!, 'push')).toBeUndefined();
    expect(verifyPeerToken(asker.machine.secret, 'asker', from.password!, 'pull')).toBeUndefined();

    // A machine not heard from lately is no source.
    const impatient = new Machines(db, 1);
    await until('holder to count as offline', async () => ((await impatient.get('holder'))?.status === 'offline' ? true : undefined));
    expect((await blobSources(db, impatient, 'asker', [LAYER_A], 300)).sources[LAYER_A]).toEqual([]);

    // A delta that drops the image drops the holder.
    await machines.applyDelta('holder', { base_seq: 1, seq: 2, upserted: [], removed: [hex('1')] });
    expect((await blobSources(db, machines, 'asker', [LAYER_A], 300)).sources[LAYER_A]).toEqual([]);
    await db.close();
  });
  it('over REST answers only the machine itself, with its secret, for well-formed digests; a refusal changes nothing', async () => {
    const control = await startControl(parseControlConfig({ dataDir: await tmpDir('stowage-blob-sources-rest-'), ...(await controlDatabase()), listen: { port: 0 } }));
    try {
      const holder = await control.ctx.machines.join(joinReq('holder', [item(hex('1'), [LAYER_A])]));
      const asker = await control.ctx.machines.join(joinReq('asker', []));
      const ask = async (id: string, authorization: string | undefined, body: string) => {
        const res = await request(`${control.url}/api/v1/machines/${id}/blob-sources`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) },
          body,
        });
        return { status: res.statusCode, body: (await res.body.json()) as { sources?: Record<string, Array<{ machine_id: string }>>; error?: { code: string; message: string } } };
      };
      const good = JSON.stringify({ digests: [LAYER_A] });
      // What a refused request could have changed (status is left out: it moves with the clock).
      const recorded = async () => (await control.ctx.machines.list()).map((m) => [m.id, m.agent_url, m.inventory_seq, m.last_seen_at]);
      const machinesBefore = await recorded();

      const ok = await ask('asker', `Bearer ${asker.secret}`, good);
      expect(ok.status).toBe(200);
      expect(ok.body.sources?.[LAYER_A]?.map((x) => x.machine_id)).toEqual(['holder']);

      // Another machine's secret, none, a user's key, an unknown machine: 401 before the body is read.
      for (const [id, authorization] of [
        ['holder', `Bearer ${asker.secret}`],
        ['asker', undefined],
        ['asker', `Bearer ${control.adminToken}`],
        ['nowhere', `Bearer ${asker.secret}`],
        ['asker', `Bearer ${holder.secret}`],
      ] as const) {
        const r = await ask(id, authorization, good);
        expect([r.status, r.body.error?.code], `${id} ${authorization ?? 'none'}`).toEqual([401, 'UNAUTHORIZED']);
      }
      for (const body of ['{nope', '{}', JSON.stringify({ digests: [] }), JSON.stringify({ digests: ['sha256:nothex'] }), JSON.stringify({ digests: ['../../etc/passwd'] })]) {
        const r = await ask('asker', `Bearer ${asker.secret}`, body);
        expect(r.status, body).toBe(400);
        expect(r.body.error?.message.length).toBeGreaterThan(0);
      }
      expect(await recorded()).toEqual(machinesBefore);
    } finally {
      await control.close();
    }
  });
});
