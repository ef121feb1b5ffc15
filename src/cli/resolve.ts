import type { Availability } from '../control/wire.js';
import { isImageIdLike, normalizeReference } from '../oci/reference.js';
import { CliError } from './errors.js';
import type { ApiClient } from './http.js';
import { shortDigest } from './output.js';
import { statusResponseSchema } from './responses.js';

/**
 * An image named the way docker names it, resolved against what the machines hold (GET
 * /api/v1/images/status): a reference (short names normalized: "myapp:1.0" is
 * "docker.io/library/myapp:1.0"), a full digest (manifest, index or config), a unique prefix of one
 * (12 hex, as `image status` shows them, with or without "sha256:"), or an image ID (the config
 * digest). The reference is tried first, then the digests, as docker does. The answer is the digest the
 * control plane's requests take: the index digest when the matches are platforms of one index, else the
 * manifest digest. Two different images under one name is AMBIGUOUS_IMAGE (exit 2), listing them.
 */

export interface ResolvedImage {
  /** Manifest or index digest. */
  digest: string;
  /** The records that matched (every platform, every machine that was searched). */
  records: Availability[];
}

const FULL_DIGEST = /^sha256:[a-f0-9]{64}$/;

/** The name as a normalized reference, or undefined when it is not one. */
function asReference(name: string): string | undefined {
  try {
    return normalizeReference(name);
  } catch {
    return undefined;
  }
}

function digestsOf(r: Availability): string[] {
  return [r.digest, r.index_digest, r.config_digest].filter((d): d is string => d !== null);
}

/** The records `name` matches, without deciding between them. */
export function matchRecords(name: string, all: readonly Availability[]): Availability[] {
  const records = all.filter((r) => r.presence.state === 'present');
  const ref = asReference(name);
  if (ref !== undefined) {
    const byRef = records.filter((r) => r.references.includes(ref) || r.references.includes(name));
    if (byRef.length) return byRef;
  }
  if (FULL_DIGEST.test(name)) return records.filter((r) => digestsOf(r).includes(name));
  if (isImageIdLike(name)) {
    const prefix = name.startsWith('sha256:') ? name : `sha256:${name}`;
    return records.filter((r) => digestsOf(r).some((d) => d.startsWith(prefix)));
  }
  return [];
}

/** One image per index (all its platforms) or per manifest outside any index. */
function imageKey(r: Availability): string {
  return r.index_digest ?? r.digest;
}

export function resolveFromRecords(name: string, records: readonly Availability[], where: string): ResolvedImage {
  const matched = matchRecords(name, records);
  if (matched.length === 0) {
    // A full digest nobody reports is passed on: the control plane answers for it (IMAGE_NOT_FOUND, …).
    if (FULL_DIGEST.test(name)) return { digest: name, records: [] };
    const ref = asReference(name);
    const shown = ref !== undefined && ref !== name ? `${name} (${ref})` : name;
    throw new CliError('IMAGE_NOT_FOUND', `${where} holds no image named ${shown}: give a reference, a digest, a unique digest prefix or an image ID as \`stowctl image status\` shows them`, {
      details: { name },
    });
  }
  const byImage = new Map<string, Availability[]>();
  for (const r of matched) byImage.set(imageKey(r), [...(byImage.get(imageKey(r)) ?? []), r]);
  if (byImage.size > 1) {
    const candidates = [...byImage.entries()].map(([digest, rs]) => ({
      digest,
      references: [...new Set(rs.flatMap((r) => r.references))].sort(),
      machines: [...new Set(rs.map((r) => r.machine_id))].sort(),
    }));
    // In digest order, so the list reads the same on every call whatever order the control plane answered in.
    candidates.sort((x, y) => x.digest.localeCompare(y.digest));
    const lines = candidates.map((c) => `  ${shortDigest(c.digest)}  ${c.references.join(',') || '-'}  on ${c.machines.join(',')}`);
    throw new CliError('AMBIGUOUS_IMAGE', `"${name}" names ${candidates.length} different images; use a longer digest prefix or the full digest:\n${lines.join('\n')}`, {
      exitCode: 2,
      details: { name, candidates },
    });
  }
  const [[digest, rs]] = [...byImage.entries()] as [[string, Availability[]]];
  return { digest, records: rs };
}

/** Resolves `name` against the images `machine` holds (every machine when undefined). */
export async function resolveImage(api: ApiClient, name: string, machine?: string): Promise<ResolvedImage> {
  const res = await api.call('GET', '/api/v1/images/status', statusResponseSchema, { query: { machine } });
  return resolveFromRecords(name, res.records, machine ?? 'no machine');
}
