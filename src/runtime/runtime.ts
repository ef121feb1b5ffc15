import type { Digest } from '../oci/digest.js';
import type { ContentStoreApi, ImageIndexApi, ImageRecord } from '../store/types.js';

/**
 * Where a machine's images land. `none`: Stowage's own store is the machine's image store (served through
 * the agent's Docker API). `containerd` and `docker`: the machine's container runtime holds the images and
 * is the source of truth for what the machine has; the agent's image records follow it.
 */

export type RuntimeKind = 'none' | 'containerd' | 'docker';

/** An image whose blobs are all verified and in `store`, to be made startable under these names. */
export interface HandOver {
  /** The manifest or index digest the names point at. */
  target: Digest;
  mediaType: string;
  size: number;
  /** The platform images to make startable (for an index, the children that were fetched). */
  records: readonly ImageRecord[];
  /** Fully normalised references ("docker.io/library/app:1") to create in the runtime. */
  names: readonly string[];
}

export interface RuntimeAdapter {
  readonly kind: RuntimeKind;
  /** The blob store transfers write into and /v2/ serves from. */
  readonly store: ContentStoreApi;
  /** The image records the agent reports; for a runtime, they follow what the runtime holds. */
  readonly images: ImageIndexApi;
  /** Begins following the runtime (listing it, then its events); never throws for a runtime that is down. */
  start(): Promise<void>;
  /**
   * Makes the image startable in the runtime. Throws a StowageError (RUNTIME_UNAVAILABLE, RUNTIME_ERROR, …)
   * when it cannot; then no name of it was created.
   */
  handOver(image: HandOver): Promise<void>;
  /** Removes the runtime's images that point at any of these digests. */
  remove(digests: readonly Digest[]): Promise<void>;
  /** Resolves once the agent's records reflect what the runtime holds now. */
  sync(): Promise<void>;
  /**
   * Whether the runtime lists this platform image as of its last list. Only those are reported: a record
   * written by a transfer or an upload that has not been handed over (or whose hand-over failed) is not.
   */
  holds(record: ImageRecord): boolean;
  /** Calls `listener` whenever holds() may answer differently; returns the unsubscribe. */
  onHoldsChange(listener: () => void): () => void;
  close(): Promise<void>;
}

/** The listeners of onHoldsChange. */
export class HoldsListeners {
  private readonly listeners = new Set<() => void>();

  add(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(): void {
    for (const l of [...this.listeners]) l();
  }
}
