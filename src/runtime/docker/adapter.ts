import { join } from 'node:path';
import { type Digest, isDigest } from '../../oci/digest.js';
import { MediaType } from '../../oci/media-types.js';
import type { Platform } from '../../oci/platform.js';
import { normalizeReference, parseReference, repository } from '../../oci/reference.js';
import { exportArchive } from '../../store/export-archive.js';
import { openStore } from '../../store/index.js';
import type { ContentStore } from '../../store/content-store.js';
import type { ImageIndex } from '../../store/image-index.js';
import { CoalescedRun } from '../coalesced-run.js';
import { type HandOver, HoldsListeners, type RuntimeAdapter } from '../runtime.js';
import type { ImageRecord } from '../../store/types.js';
import { DockerEngineClient, type EngineImage } from './client.js';

/**
 * The docker runtime (Docker Engine, or Podman's Docker-compatible service): blobs arrive in Stowage's store
 * as with no runtime, then the image is handed over by streaming a docker-save archive, generated on the fly
 * from the store, into POST /images/load, and tagged with its references. The engine's image list (followed
 * through /events) decides what the machine holds: an image record stays reported while the engine has an
 * image with its config digest (the image ID), under the engine's tags.
 */

type NewImage = Omit<ImageRecord, 'addedAt'>;

/** The engine's tags as Stowage references (Docker's "app:1" is "docker.io/library/app:1"); "<none>" left out. */
function engineTags(img: EngineImage): string[] {
  const out: string[] = [];
  for (const t of img.RepoTags ?? []) {
    if (t.startsWith('<none>')) continue;
    try {
      out.push(normalizeReference(t));
    } catch {
      // a name Stowage cannot parse is not reported
    }
  }
  return out;
}

function parseRepoDigest(s: string): { repository: string; digest: Digest } | undefined {
  try {
    const ref = parseReference(s);
    return ref.digest !== undefined && isDigest(ref.digest) ? { repository: repository(ref), digest: ref.digest } : undefined;
  } catch {
    return undefined;
  }
}

/** Podman's Digest (the manifest it pulled, per platform), else Docker's first repo digest. */
function manifestDigestOf(img: EngineImage): Digest | undefined {
  if (img.Digest && isDigest(img.Digest)) return img.Digest;
  for (const rd of img.RepoDigests ?? []) {
    const named = parseRepoDigest(rd);
    if (named) return named.digest;
  }
  return undefined;
}

const RETRY_MS = 1_000;
const RELIST_MS = 30_000;

export class DockerRuntime implements RuntimeAdapter {
  readonly kind = 'docker' as const;
  private readonly client: DockerEngineClient;
  private readonly abort = new AbortController();
  private timers: NodeJS.Timeout[] = [];
  /** Events coalesce into one re-list of the engine's images. */
  private readonly lister = new CoalescedRun(
    async () => await this.mirror(await this.client.listImages()),
    () => this.abort.signal.aborted,
  );
  /** Image IDs the engine held at the previous list (undefined before the first). */
  private previous: Set<string> | undefined;
  /** Manifest digest → image ID of every record seen: unload asks after the record is gone. */
  private readonly configOf = new Map<Digest, string>();
  /** Records of images the engine got by itself, by image ID (described once). */
  private readonly foreign = new Map<string, NewImage>();
  private readonly holdsListeners = new HoldsListeners();

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

  holds(record: ImageRecord): boolean {
    return this.previous?.has(record.configDigest) ?? false;
  }

  onHoldsChange(listener: () => void): () => void {
    return this.holdsListeners.add(listener);
  }

  /**
   * An image the engine got by itself (`podman pull`, `docker pull`, a build on the machine), as a record: known
   * by its registry manifest digest (Podman's Digest, else the repo digest) and its ID (the config digest).
   * Undefined when the engine gives no manifest digest for it (a Docker image never pulled from a registry).
   */
  private async describe(id: string, img: EngineImage): Promise<NewImage | undefined> {
    const digest = manifestDigestOf(img);
    if (!digest || !isDigest(id)) return undefined;
    const details = await this.client.inspect(id);
    const platform: Platform = { os: details.Os || 'linux', architecture: details.Architecture || 'amd64' };
    if (details.Variant) platform.variant = details.Variant;
    return {
      manifestDigest: digest,
      manifestMediaType: MediaType.DockerManifest,
      configDigest: id,
      platform,
      layers: [],
      size: img.Size ?? details.Size ?? 0,
      created: details.Created,
      labels: {},
    };
  }

  /**
   * Records whose image ID the engine dropped go (on the first list: every record the engine lacks); images the
   * engine got by itself get a record; and each record's tags become the engine's tags for its ID.
   */
  private async mirror(list: readonly EngineImage[]): Promise<void> {
    const ids = new Map<string, string[]>();
    const engineImages = new Map<string, EngineImage>();
    for (const img of list) {
      const id = img.Id.startsWith('sha256:') ? img.Id : `sha256:${img.Id}`;
      ids.set(id, engineTags(img));
      engineImages.set(id, img);
    }
    const { images } = this;
    const recorded = new Set(images.listImages().map((r) => r.configDigest as string));
    const foreign: NewImage[] = [];
    for (const [id, img] of engineImages) {
      if (recorded.has(id)) continue;
      let rec = this.foreign.get(id);
      if (!rec) {
        rec = await this.describe(id, img).catch(() => undefined);
        if (rec) this.foreign.set(id, rec);
      }
      if (rec) foreign.push(rec);
    }
    for (const id of this.foreign.keys()) if (!ids.has(id)) this.foreign.delete(id);
    const previous = this.previous;
    images.transaction(() => {
      for (const rec of foreign) {
        if (images.getImage(rec.manifestDigest)) continue;
        images.putImage(rec);
        for (const repoDigest of engineImages.get(rec.configDigest)?.RepoDigests ?? []) {
          const named = parseRepoDigest(repoDigest);
          if (named?.digest === rec.manifestDigest) images.addRepoDigest({ repository: named.repository, digest: rec.manifestDigest, manifestDigest: rec.manifestDigest });
        }
      }
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
    const next = new Set(ids.keys());
    this.previous = next;
    if (!previous || previous.size !== next.size || [...next].some((id) => !previous.has(id))) this.holdsListeners.emit();
  }

  async handOver(image: HandOver): Promise<void> {
    // Engines tag by name:tag only; a digest reference (a transfer without tags) leaves the image untagged.
    const tags = image.names.filter((n) => !n.includes('@'));
    const loaded: string[] = [];
    // What the engine holds now decides what is loaded (an event of a removal may not have arrived yet).
    await this.sync().catch(() => undefined);
    try {
      for (const rec of image.records) {
        this.configOf.set(rec.manifestDigest, rec.configDigest);
        // An image the engine holds already (by ID) only needs its names.
        if (!this.previous?.has(rec.configDigest)) {
          loaded.push(rec.configDigest);
          // A docker-save archive names images by tag; an image without one is loaded by ID and tagged after.
          const archive = exportArchive([{ manifestDigest: rec.manifestDigest, references: tags }], { store: this.store, images: this.images });
          try {
            await this.client.load(archive);
          } finally {
            archive.destroy(); // a refused or cut load stops reading the store
          }
        }
        for (const name of tags) await this.client.tag(rec.configDigest, name);
      }
    } catch (err) {
      // All or nothing: an image loaded but not named (or half the images) must not stay in the engine.
      for (const id of loaded) await this.client.remove(id).catch(() => undefined);
      await this.sync().catch(() => undefined);
      throw err;
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
