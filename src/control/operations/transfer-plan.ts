import { StowageError } from '../../errors.js';
import { parseReference } from '../../oci/reference.js';
import type { AvailabilityStore } from '../availability.js';
import type { MachineRecord } from '../machines.js';
import { pullToken } from '../peer-client.js';
import type { Availability, TransferRequest, TransferSource } from '../wire.js';

/**
 * What a target pulls from a source agent: the requested digest (a platform manifest, or an index with a
 * platform), from the source's /v2/ with a pull-only peer token, plus the tags the source knows it by.
 */

/** The source's present records of `digest`: the manifest itself, or every platform of the index. */
export async function sourceRecords(availability: AvailabilityStore, source: string, digest: string): Promise<Availability[]> {
  const records = await availability.presentOn(source, digest);
  if (records.length === 0) {
    throw new StowageError('IMAGE_NOT_FOUND', `machine "${source}" does not hold ${digest}`, { details: { machine_id: source, digest } });
  }
  return records;
}

/**
 * The source record a target gets: the one whose digest was asked for, else (an index) the asked
 * platform, else the target's own platform, else the first the source holds.
 */
export function chooseRecord(records: readonly Availability[], digest: string, platform: string | undefined, target: MachineRecord | undefined): Availability {
  const exact = records.find((r) => r.digest === digest);
  if (exact) return exact;
  if (platform !== undefined) {
    const match = records.find((r) => r.platform === platform);
    if (!match) {
      throw new StowageError('PLATFORM_NOT_FOUND', `the source holds ${digest} for ${records.map((r) => r.platform).join(', ')}, not ${platform}`, {
        details: { digest, platform },
      });
    }
    return match;
  }
  return records.find((r) => target !== undefined && r.platform === target.platform) ?? (records[0] as Availability);
}

/** A repository path the source's /v2/ serves the image under (any name works there for digests). */
export function repositoryOf(references: readonly string[]): string {
  for (const ref of references) {
    try {
      return parseReference(ref).path;
    } catch {
      // try the next one
    }
  }
  return 'stowage/image';
}

export function peerTransferRequest(opts: {
  operationId: string;
  source: MachineRecord;
  digest: string;
  record: Availability;
  ttlSeconds: number;
  /** Machines to take blobs from before the source, nearest first (see fanout.ts). */
  peers?: readonly MachineRecord[];
}): TransferRequest {
  const { source, record, digest } = opts;
  const repository = repositoryOf(record.references);
  const from = (m: MachineRecord): TransferSource => ({
    registry_url: m.agent_url,
    repository,
    username: 'stowage',
    password: pullToken(m, opts.ttlSeconds, opts.operationId),
  });
  const isIndex = record.digest !== digest;
  return {
    operation_id: opts.operationId,
    source: from(source),
    ref: digest,
    ...(isIndex ? { platform: record.platform } : {}),
    references: record.references,
    ...(opts.peers && opts.peers.length > 0 ? { peers: opts.peers.map(from) } : {}),
  };
}

/** How often a transfer gets renewed tokens: well before they expire. */
export function renewEveryMs(ttlSeconds: number): number {
  return Math.max(1_000, Math.floor((ttlSeconds * 1000) / 3));
}
