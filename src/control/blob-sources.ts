import { sql } from 'kysely';
import type { Db } from './db/database.js';
import { inList } from './db/in-list.js';
import type { MachineRecord, Machines } from './machines.js';
import { pullToken } from './peer-client.js';
import { repositoryOf } from './operations/transfer-plan.js';
import type { BlobSourcesResponse } from './wire.js';

/**
 * Where in the cluster a blob can be read: the online machines (other than the one asking) whose reported
 * images contain it, as a layer or as the config. Each comes with a pull-only peer token for its /v2/, so
 * the asking agent (a pull-through mirror) reads the blob straight from the holder. Holders are listed
 * most recently reported first, at most `perDigest` of them.
 */

interface HolderRow {
  blob: string;
  machine_id: string;
  refs: string;
}

const DEFAULT_PER_DIGEST = 3;

export async function blobSources(
  db: Db,
  machines: Machines,
  requester: string,
  digests: readonly string[],
  ttlSeconds: number,
  perDigest = DEFAULT_PER_DIGEST,
): Promise<BlobSourcesResponse> {
  const wanted = [...new Set(digests)];
  const sources: BlobSourcesResponse['sources'] = Object.fromEntries(wanted.map((d) => [d, []]));
  if (wanted.length === 0) return { sources };
  // The layers column is a JSON array of digests: each dialect has its own function listing its elements.
  const layers =
    db.dialect === 'postgres' ? sql`jsonb_array_elements_text(COALESCE(a.layers, '[]')::jsonb) AS j(value)` : sql`json_each(COALESCE(a.layers, '[]')) j`;
  const rows = await db.all<HolderRow>(
    sql`SELECT j.value AS blob, a.machine_id, a.refs FROM availability a, ${layers}
          WHERE a.state = 'present' AND a.machine_id != ${requester} AND j.value IN ${inList(wanted)}
        UNION ALL
        SELECT a.config_digest AS blob, a.machine_id, a.refs FROM availability a
          WHERE a.state = 'present' AND a.machine_id != ${requester} AND a.config_digest IN ${inList(wanted)}
        ORDER BY 1`,
  );
  const online = new Map<string, MachineRecord | undefined>();
  const holder = async (id: string): Promise<MachineRecord | undefined> => {
    if (!online.has(id)) {
      const m = await machines.get(id);
      online.set(id, m?.status === 'online' ? m : undefined);
    }
    return online.get(id);
  };
  for (const row of rows) {
    const list = sources[row.blob];
    if (!list || list.length >= perDigest || list.some((s) => s.machine_id === row.machine_id)) continue;
    const m = await holder(row.machine_id);
    if (!m) continue;
    list.push({
      machine_id: m.id,
      registry_url: m.agent_url,
      repository: repositoryOf(JSON.parse(row.refs) as string[]),
      username: 'stowage',
      password: pullToken(m, ttlSeconds),
    });
  }
  return { sources };
}
