import { StowageError } from '../errors.js';
import { type Digest, digestOf } from '../oci/digest.js';
import { parseManifestBytes } from '../oci/manifest.js';
import type { Logger } from 'pino';
import type { ContentStoreApi } from '../store/types.js';

interface Announcement {
  digest: Digest;
  /** Ends the expectation of each blob that was not here when it was announced. */
  releases: Array<() => void>;
  timer: NodeJS.Timeout;
}

/**
 * Images being pushed to this machine, announced by the control plane before their blobs arrive: the
 * manifest is kept (peers GET it by digest from /v2/; it is stored only by the push's own manifest PUT, so
 * nothing says the image is here before it is) and every blob not yet here is expected
 * (store/live-blobs.ts), so a peer that asks for it waits for the upload's bytes instead of being told it
 * does not exist. Withdrawn when the push ends (or its time is up): a blob that never came fails its readers.
 */
export class IncomingUploads {
  private readonly announced = new Map<string, Announcement>();
  private readonly manifests = new Map<Digest, Buffer>();

  constructor(
    private readonly store: ContentStoreApi,
    private readonly log?: Logger,
  ) {}

  /**
   * Announces the image `manifest` (its JSON text) for `operationId`, for `ttlMs` at most. The announcement
   * is registered before the store is asked which blobs it lacks, so a withdraw that comes meanwhile (the
   * push ended, or the control plane gave up waiting for this answer) ends it: nothing is left expected.
   */
  async announce(operationId: string, manifest: string, ttlMs: number): Promise<void> {
    const bytes = Buffer.from(manifest, 'utf8');
    const parsed = parseManifestBytes(bytes);
    if (parsed.kind !== 'manifest') throw new StowageError('BAD_REQUEST', 'only a platform manifest can be announced, not an index');
    this.withdraw(operationId);
    const digest = digestOf(bytes);
    const timer = setTimeout(() => this.withdraw(operationId), ttlMs);
    timer.unref();
    const entry: Announcement = { digest, releases: [], timer };
    this.announced.set(operationId, entry);
    const current = (): boolean => this.announced.get(operationId) === entry;
    try {
      for (const d of [parsed.manifest.config, ...parsed.manifest.layers]) {
        if (await this.store.has(d.digest)) continue;
        if (!current()) return; // withdrawn meanwhile: expect nothing more
        const release = this.store.expectBlob?.(d.digest, d.size);
        if (release) entry.releases.push(release);
      }
    } catch (err) {
      if (current()) this.withdraw(operationId);
      throw err;
    }
    if (!current()) return;
    // Served only now: a peer that reads the manifest finds each blob it names here or expected.
    this.manifests.set(digest, bytes);
    this.log?.info({ operation_id: operationId, digest, expected: entry.releases.length }, 'push announced');
  }

  /** The manifest of an image announced and not yet withdrawn. */
  manifest(digest: Digest): Buffer | undefined {
    return this.manifests.get(digest);
  }

  /** Ends the announcement: blobs that did not arrive fail whoever waits for them. */
  withdraw(operationId: string): boolean {
    const entry = this.announced.get(operationId);
    if (!entry) return false;
    this.announced.delete(operationId);
    if (![...this.announced.values()].some((e) => e.digest === entry.digest)) this.manifests.delete(entry.digest);
    clearTimeout(entry.timer);
    for (const release of entry.releases) release();
    this.log?.info({ operation_id: operationId, digest: entry.digest }, 'push announcement withdrawn');
    return true;
  }

  close(): void {
    for (const id of [...this.announced.keys()]) this.withdraw(id);
  }
}
