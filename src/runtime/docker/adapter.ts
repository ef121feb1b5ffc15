import { join } from 'node:path';
import type { Digest } from '../../oci/digest.js';
import { exportArchive } from '../../store/export-archive.js';
import { openStore } from '../../store/index.js';
import type { ContentStore } from '../../store/content-store.js';
import type { ImageIndex } from '../../store/image-index.js';
import { CoalescedRun } from '../coalesced-run.js';
import type { HandOver, RuntimeAdapter } from '../runtime.js';
import { DockerEngineClient, type EngineImage } from './client.js';

/**
 * The docker runtime (Docker Engine, or Podman's Docker-compatible service): blobs arrive in Stowage's store
 * as with no runtime, then the image is handed over by streaming a docker-save archive, generated on the fly
 * from the store, into POST /images/load, and tagged with its references. The engine's image list (followed
 * through /events) decides what the machine holds: an image record stays reported while the engine has an
 * image with its config digest (the image ID), under the engine's tags.
 */

const RETRY_MS = 1_000;
const RELIST_MS = 30_000;

export class DockerRuntime implements RuntimeAdapter {
  readonly kind = 'docker' as const;
  private readonly client: DockerEngineClient;
  private readonly abort = new AbortController();
  private timers: NodeJS.Timeout[] = [];
  /** Events coalesce into one re-list of the engine's images. */
  private readonly lister = new CoalescedRun(
    async () => this.mirror(await this.client.listImages()),
    () => this.abort.signal.aborted,
  );
  /** Image IDs the engine held at the previous list (undefined before the first). */
  private previous: Set<string> | undefined;
  /** Manifest digest → image ID of every record seen: unload asks after the record is gone. */
  private readonly configOf = new Map<Digest, string>();

  private constructor(
    readonly store: ContentStore,
    readonly images: ImageIndex,
    socket: string,
    private readonly log: (message: string) => void,
  ) {
    this.client = new DockerEngineClient(socket);
  }

  static async open(opts: { socket: string; dataDir: string; log?: (message: string) => void }): Promise<DockerRuntime> {
    const { store, images } = await openStore(join(opts.dataDir, 'store'));
    return new DockerRuntime(store, images, opts.socket, opts.log ?? (() => undefined));
  }

  async start(): Promise<void> {
    void this.follow();
    const relist = setInterval(() => void this.sync().catch(() => undefined), RELIST_MS);
    relist.unref();
    this.timers.push(relist);
    await this.sync().catch((err: unknown) => this.log(`${(err as Error).message}; will retry`));
  }

  private async follow(): Promise<void> {
    while (!this.abort.signal.aborted) {
      try {
        await this.client.events(() => void this.sync().catch(() => undefined), this.abort.signal);
      } catch {
        // the engine went away; retried below
      }
      if (this.abort.signal.aborted) return;
      await new Promise((r) => {
        const t = setTimeout(r, RETRY_MS);
        t.unref();
      });
    }
  }

  sync(): Promise<void> {
    return this.lister.run();
  }

  /**
   * Records whose image ID the engine dropped go (on the first list: every record the engine lacks), and each
   * remaining record's tags become the engine's tags for that ID.
   */
  private mirror(list: readonly EngineImage[]): void {
    const ids = new Map<string, string[]>();
    for (const img of list) ids.set(img.Id.startsWith('sha256:') ? img.Id : `sha256:${img.Id}`, (img.RepoTags ?? []).filter((t) => !t.startsWith('<none>')));
    const previous = this.previous;
    const { images } = this;
    images.transaction(() => {
      for (const rec of images.listImages()) {
        this.configOf.set(rec.manifestDigest, rec.configDigest);
        const tags = ids.get(rec.configDigest);
        if (tags === undefined) {
          if (previous === undefined || previous.has(rec.configDigest)) images.deleteImage(rec.manifestDigest);
          continue;
        }
        const wanted = new Set(tags);
        for (const t of images.tagsFor(rec.manifestDigest)) if (!wanted.has(t.reference)) images.untag(t.reference);
        for (const t of wanted) if (images.resolveTag(t) !== rec.manifestDigest) images.tag(t, rec.manifestDigest);
      }
    });
    this.previous = new Set(ids.keys());
  }

  async handOver(image: HandOver): Promise<void> {
    // Engines tag by name:tag only; a digest reference (a transfer without tags) leaves the image untagged.
    const tags = image.names.filter((n) => !n.includes('@'));
    for (const rec of image.records) {
      this.configOf.set(rec.manifestDigest, rec.configDigest);
      // A docker-save archive names images by tag; an image without one is loaded by ID and tagged after.
      await this.client.load(exportArchive([{ manifestDigest: rec.manifestDigest, references: tags }], { store: this.store, images: this.images }));
      for (const name of tags) await this.client.tag(rec.configDigest, name);
    }
    await this.sync().catch(() => undefined);
  }

  async remove(digests: readonly Digest[]): Promise<void> {
    const ids = new Set<string>();
    for (const d of digests) {
      const id = this.images.getImage(d)?.configDigest ?? this.configOf.get(d);
      if (id) ids.add(id);
    }
    for (const id of ids) await this.client.remove(id);
    await this.sync().catch(() => undefined);
  }

  async close(): Promise<void> {
    this.abort.abort();
    for (const t of this.timers) clearTimeout(t);
    await this.lister.idle();
    await this.client.close();
    this.images.close();
  }
}
