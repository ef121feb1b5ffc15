import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Digest } from '../../oci/digest.js';
import { isIndexMediaType } from '../../oci/media-types.js';
import { ImageIndex } from '../../store/image-index.js';
import { CoalescedRun } from '../coalesced-run.js';
import { type HandOver, HoldsListeners, type RuntimeAdapter } from '../runtime.js';
import type { ImageRecord } from '../../store/types.js';
import { ContainerdClient, runtimeError } from './client.js';
import { ContainerdContentStore } from './content-store.js';
import { ContainerdMirror } from './inventory.js';
import { AgentLease } from './leases.js';
import { labelIndex, unpackManifest } from './unpack.js';

/**
 * The containerd runtime: containerd's content store is the blob store, its image list is the machine's
 * inventory (followed through its event stream), and a transfer ends with the image unpacked and named in
 * containerd. The agent keeps only small image records under its data directory, mirrored from containerd.
 */

export interface ContainerdOptions {
  socket: string;
  namespace: string;
  snapshotter: string;
  /** Where the mirrored image records live. */
  dataDir: string;
  /** Logs what the agent cannot fix itself (containerd gone, an event stream that ended). */
  log?: (message: string) => void;
}

const RESUBSCRIBE_MS = 1_000;
/** How long one attempt to subscribe waits for containerd's socket to connect. */
const CONNECT_WAIT_MS = 5_000;
/** A full re-list now and then, in case an event was missed while the stream was being re-opened. */
const RELIST_MS = 30_000;

export class ContainerdRuntime implements RuntimeAdapter {
  readonly kind = 'containerd' as const;
  readonly store: ContainerdContentStore;
  readonly images: ImageIndex;
  private readonly client: ContainerdClient;
  private readonly lease: AgentLease;
  private readonly mirror: ContainerdMirror;
  private closed = false;
  private stream: { cancel(): void } | undefined;
  private timers: NodeJS.Timeout[] = [];
  private readonly holdsListeners = new HoldsListeners();
  /** Events coalesce into one re-list of containerd's images. */
  private readonly lister = new CoalescedRun(
    async () => {
      if (await this.mirror.apply(await this.client.listImages())) this.holdsListeners.emit();
    },
    () => this.closed,
  );

  private constructor(
    private readonly opts: ContainerdOptions,
    client: ContainerdClient,
    store: ContainerdContentStore,
    lease: AgentLease,
    images: ImageIndex,
  ) {
    this.client = client;
    this.store = store;
    this.lease = lease;
    this.images = images;
    this.mirror = new ContainerdMirror(store, images);
  }

  static async open(opts: ContainerdOptions): Promise<ContainerdRuntime> {
    const client = new ContainerdClient(opts.socket, opts.namespace);
    const lease = new AgentLease(client);
    const dir = join(opts.dataDir, 'runtime-containerd');
    await mkdir(dir, { recursive: true });
    const store = await ContainerdContentStore.open(client, lease, dir);
    return new ContainerdRuntime(opts, client, store, lease, ImageIndex.open(dir));
  }

  private log(message: string): void {
    this.opts.log?.(message);
  }

  async start(): Promise<void> {
    this.subscribe();
    const relist = setInterval(() => void this.sync().catch(() => undefined), RELIST_MS);
    relist.unref();
    this.timers.push(relist);
    await this.sync().catch((err: unknown) => this.log(`containerd at ${this.opts.socket}: ${(err as Error).message}; will retry`));
  }

  /** Follows /images/ events of our namespace; each one re-lists. Re-opens the stream when it ends. */
  private subscribe(): void {
    if (this.closed) return;
    const retry = (): void => {
      const t = setTimeout(() => this.subscribe(), RESUBSCRIBE_MS);
      t.unref();
      this.timers.push(t);
    };
    // Subscribed only on a connected channel: a call made while gRPC backs off fails at once, and the
    // stream would be retried blind.
    void this.client.eventsReady(CONNECT_WAIT_MS).then((ready) => {
      if (this.closed) return;
      if (!ready) {
        retry();
        return;
      }
      const ns = this.opts.namespace.replace(/"/g, '');
      const call = this.client.subscribe([`namespace=="${ns}",topic~="^/images/"`]);
      this.stream = call;
      let opened = false;
      call.on('data', () => {
        opened = true;
        void this.sync().catch(() => undefined);
      });
      // containerd sends nothing on the stream before the first event: what happened while it was not
      // subscribed is picked up by a re-list now and one a moment later (the subscription is registered by then).
      void this.sync().catch(() => undefined);
      const later = setTimeout(() => void this.sync().catch(() => undefined), RESUBSCRIBE_MS);
      later.unref();
      this.timers.push(later);
      const again = (): void => {
        if (this.closed || this.stream !== call) return;
        this.stream = undefined;
        if (opened) this.log(`containerd event stream at ${this.opts.socket} ended; re-subscribing`);
        retry();
      };
      call.on('error', again);
      call.on('end', again);
    });
  }

  sync(): Promise<void> {
    return this.lister.run();
  }

  holds(record: ImageRecord): boolean {
    return this.mirror.holds(record.manifestDigest);
  }

  onHoldsChange(listener: () => void): () => void {
    return this.holdsListeners.add(listener);
  }

  async handOver(image: HandOver): Promise<void> {
    const lease = await this.lease.id();
    const deps = { client: this.client, store: this.store, snapshotter: this.opts.snapshotter, lease };
    if (isIndexMediaType(image.mediaType)) await labelIndex(deps, image.target);
    for (const rec of image.records) await unpackManifest(deps, rec.manifestDigest);
    const created: string[] = [];
    try {
      for (const name of image.names) {
        await this.client.putImage(name, { media_type: image.mediaType, digest: image.target, size: image.size }, lease);
        created.push(name);
      }
    } catch (err) {
      // All names or none: a half-named image would be listed while the transfer says it failed.
      for (const name of created) await this.client.deleteImage(name).catch(() => undefined);
      throw runtimeError(err, `image create`);
    }
    // The event stream brings the same change; waiting here makes the result visible before the transfer ends.
    await this.sync().catch(() => undefined);
  }

  async remove(digests: readonly Digest[]): Promise<void> {
    const wanted = new Set<string>(digests);
    for (const img of await this.client.listImages()) if (img.target && wanted.has(img.target.digest)) await this.client.deleteImage(img.name);
    await this.sync().catch(() => undefined);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.stream?.cancel();
    await this.lister.idle();
    this.client.close();
    this.images.close();
  }
}
