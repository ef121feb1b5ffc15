import type { Digest } from '../oci/digest.js';
import type { StoreHandles } from './pull.js';
import type { RegistryClient } from './client.js';
import { recordPushedManifest } from './record-manifest.js';
import { bodyChunks } from './body-chunks.js';
import { type StallGuard, stallGuard } from './stall-guard.js';

/**
 * Brings along what refers to a pulled image: its signatures, SBOMs and other artifacts (the source's
 * referrers of each pulled manifest), so an artifact travels with its subject from machine to machine.
 * Each referrer's blobs are fetched (only those the store lacks, each verified against its digest) and
 * the manifest is then recorded exactly as a push of it would be (record-manifest.ts), by digest.
 * One level deep; an index referrer is recorded without fetching its children.
 */

/** Referrers taken per subject: an artifact list is metadata, not a way to fill a disk. */
const MAX_REFERRERS = 100;

export interface PullReferrersOptions {
  /** Called with the size of each chunk of blob bytes received (progress, bandwidth cap). */
  onBlobBytes?: ((bytes: number) => Promise<void> | void) | undefined;
  /** Ends the work (the transfer stopping): what is under way is cut. */
  signal?: AbortSignal | undefined;
  /** A request that gets nothing for this long is cut (TRUNCATED), as a stalled blob of the image is. */
  stallTimeoutMs?: number | undefined;
}

/** Returns the digests of the referrers recorded (those already held are skipped). */
export async function pullReferrers(client: RegistryClient, repo: string, subjects: readonly Digest[], handles: StoreHandles, opts: PullReferrersOptions = {}): Promise<Digest[]> {
  const { store, images } = handles;
  const recorded: Digest[] = [];
  // A source that stops answering must not hold the transfer up: every request is cut after the stall timeout.
  const guarded = async <T>(digest: Digest, fetch: (stall: StallGuard) => Promise<T>): Promise<T> => {
    const stall = stallGuard(opts.stallTimeoutMs, client.host, digest, opts.signal);
    try {
      return await fetch(stall);
    } finally {
      stall.stop();
    }
  };
  for (const subject of new Set(subjects)) {
    const referrers = (await guarded(subject, ({ signal }) => client.getReferrers(repo, subject, { signal }))).slice(0, MAX_REFERRERS);
    for (const d of referrers) {
      if (images.getArtifact(d.digest) || images.getImage(d.digest) || images.getIndex(d.digest)) continue;
      const m = await guarded(d.digest, ({ signal }) => client.getManifest(repo, d.digest, { signal }));
      if (m.parsed.kind === 'manifest') {
        for (const blob of [m.parsed.manifest.config, ...m.parsed.manifest.layers]) {
          if (await store.has(blob.digest)) continue;
          await guarded(blob.digest, async (stall) => {
            const body = await client.getBlob(repo, blob.digest, { signal: stall.signal });
            stall.watch(body);
            await store.put(counted(bodyChunks(body), stall.fed, opts.onBlobBytes), { digest: blob.digest, size: blob.size });
          });
        }
      }
      await recordPushedManifest(handles, { name: repo, ref: m.digest, bytes: m.bytes, contentType: m.mediaType });
      recorded.push(m.digest);
    }
  }
  return recorded;
}

async function* counted(source: AsyncIterable<Uint8Array>, fed: () => void, onBytes: PullReferrersOptions['onBlobBytes']): AsyncIterable<Uint8Array> {
  for await (const chunk of source) {
    fed();
    await onBytes?.(chunk.length);
    yield chunk;
  }
}
