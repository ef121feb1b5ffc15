import { randomUUID } from 'node:crypto';
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { type Digest, isDigest } from '../../oci/digest.js';
import { deleteUnreferenced } from '../../store/gc.js';
import type { ContentStoreApi, ImageIndexApi } from '../../store/types.js';
import type { StepLookup } from './step-cache.js';

/**
 * The build cache ledger: what builds left in the store that no user asked for by name. Two kinds:
 * - `intermediate`: layers written by stages that are not the build result (multi-stage builds);
 * - `step`: one step's image (the classic builder's cache): the image it started from, its command, the
 *   image it made (config and manifest stored, not an image record: `docker images` does not list it, but
 *   `docker image inspect <ID printed after the step>` finds it) and its layer;
 * - `base-image`: written by older versions for images a FROM pulled; no longer recorded, and never pruned
 *   (a pulled base image is an ordinary tagged image, as with dockerd).
 * POST /build/prune reclaims intermediate blobs (when no image uses them).
 * Kept as one JSON file under the engine work directory.
 */

const digestSchema = z.string().refine(isDigest) as unknown as z.ZodType<Digest>;
const descriptorSchema = z.object({ mediaType: z.string(), digest: digestSchema, size: z.number() });
const blobsSchema = z.array(z.object({ digest: digestSchema, size: z.number() }));
const stepRecordSchema = z.object({
  manifestDigest: digestSchema,
  manifestMediaType: z.string(),
  configDigest: digestSchema,
  platform: z.object({ os: z.string(), architecture: z.string(), variant: z.string().optional() }),
  layers: z.array(digestSchema),
  size: z.number(),
  created: z.string().optional(),
  labels: z.record(z.string(), z.string()),
});
const entrySchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('intermediate'),
    id: z.string(),
    createdAt: z.string(),
    blobs: blobsSchema,
  }),
  z.object({
    type: z.literal('step'),
    id: z.string(),
    createdAt: z.string(),
    parent: digestSchema,
    createdBy: z.string(),
    created: z.string(),
    image: stepRecordSchema,
    layer: z.object({ descriptor: descriptorSchema, diffId: digestSchema }).optional(),
    /** What this step added to the store: its config and manifest, and its layer when it wrote one. */
    blobs: blobsSchema,
  }),
  z.object({
    type: z.literal('base-image'),
    id: z.string(),
    createdAt: z.string(),
    reference: z.string(),
    manifestDigest: digestSchema,
  }),
]);
export type CacheEntry = z.infer<typeof entrySchema>;
export type StepEntry = Extract<CacheEntry, { type: 'step' }>;
export type NewCacheEntry = CacheEntry extends infer T ? (T extends unknown ? Omit<T, 'createdAt'> & { createdAt?: string } : never) : never;

export interface PruneResult {
  CachesDeleted: string[];
  SpaceReclaimed: number;
}

const ledgers = new Map<string, BuildCache>();

export class BuildCache {
  private chain: Promise<unknown> = Promise.resolve();
  private readonly file: string;
  /** Build directories of builds running in this process (never pruned). */
  readonly active = new Set<string>();

  private constructor(readonly workDir: string) {
    this.file = join(workDir, 'build-cache.json');
  }

  /** One ledger per work directory, shared by every app over the same context. */
  static for(workDir: string): BuildCache {
    let c = ledgers.get(workDir);
    if (!c) {
      c = new BuildCache(workDir);
      ledgers.set(workDir, c);
    }
    return c;
  }

  get buildsDir(): string {
    return join(this.workDir, 'builds');
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async load(): Promise<CacheEntry[]> {
    try {
      const parsed = z.array(entrySchema).safeParse(JSON.parse(await readFile(this.file, 'utf8')));
      return parsed.success ? parsed.data : [];
    } catch {
      return [];
    }
  }

  private async save(entries: CacheEntry[]): Promise<void> {
    await mkdir(this.workDir, { recursive: true });
    const tmp = `${this.file}.${randomUUID()}.tmp`;
    await writeFile(tmp, JSON.stringify(entries));
    await rename(tmp, this.file);
  }

  async record(...added: NewCacheEntry[]): Promise<void> {
    if (added.length === 0) return;
    await this.exclusive(async () => {
      const entries = await this.load();
      const now = new Date().toISOString();
      const full = added.map((entry) => ({ ...entry, createdAt: entry.createdAt ?? now }) as CacheEntry);
      const ids = new Set(full.map((e) => e.id));
      const rest = entries.filter((e) => !ids.has(e.id));
      rest.push(...full);
      await this.save(rest);
    });
  }

  /** The local step cache as it is now: the newest step for each (parent, command). */
  async steps(): Promise<StepLookup> {
    const byKey = new Map<string, StepEntry>();
    for (const e of await this.list()) if (e.type === 'step') byKey.set(`${e.parent}\n${e.createdBy}`, e);
    return {
      lookup(parent, createdBy) {
        const e = byKey.get(`${parent}\n${createdBy}`);
        return e ? { created: e.created, layer: e.layer } : undefined;
      },
    };
  }

  /** A step image by ID or unique ID prefix, as `docker image inspect` names it. */
  async findStep(name: string): Promise<StepEntry | undefined> {
    const hex = name.replace(/^sha256:/, '');
    if (!/^[a-f0-9]{1,64}$/.test(hex)) return undefined;
    const hits = new Map<Digest, StepEntry>();
    for (const e of await this.list()) if (e.type === 'step' && e.image.configDigest.slice(7).startsWith(hex)) hits.set(e.image.configDigest, e);
    return hits.size === 1 ? [...hits.values()][0] : undefined;
  }

  async list(): Promise<CacheEntry[]> {
    return this.exclusive(() => this.load());
  }

  /**
   * Deletes cached content. `until` (ms): only entries older than that. Returns Docker's BuildPruneResponse.
   */
  async prune(store: ContentStoreApi, images: ImageIndexApi, opts: { all: boolean; olderThanMs?: number | undefined }): Promise<PruneResult> {
    return this.exclusive(async () => {
      const entries = await this.load();
      const now = Date.now();
      const deleted: string[] = [];
      let reclaimed = 0;
      const keep: CacheEntry[] = [];
      const candidates = new Set<Digest>();
      for (const e of entries) {
        const oldEnough = opts.olderThanMs === undefined || now - Date.parse(e.createdAt) >= opts.olderThanMs;
        // Images a FROM pulled are ordinary images (tagged, listed, shared with other builds): as with dockerd,
        // no build-cache prune removes them. Entries of this kind written by older versions are dropped.
        if (e.type === 'base-image') continue;
        if (!oldEnough) {
          keep.push(e);
          continue;
        }
        for (const b of e.blobs) candidates.add(b.digest);
        deleted.push(e.id);
      }
      // Only what is actually deleted counts: a blob a running pull, import or build has leased stays.
      const present = [];
      for (const d of candidates) {
        const info = await store.stat(d);
        if (info) present.push(info);
      }
      for (const b of await deleteUnreferenced(store, images, present)) reclaimed += b.size;
      // Leftovers of builds that died with the process.
      try {
        for (const name of await readdir(this.buildsDir)) {
          const dir = join(this.buildsDir, name);
          if (this.active.has(dir)) continue;
          reclaimed += await duSize(dir);
          await rm(dir, { recursive: true, force: true });
          deleted.push(`build-dir:${name}`);
        }
      } catch {
        /* no builds directory */
      }
      await this.save(keep);
      return { CachesDeleted: deleted, SpaceReclaimed: reclaimed };
    });
  }
}

async function duSize(path: string): Promise<number> {
  try {
    const st = await stat(path);
    if (!st.isDirectory()) return st.size;
    let total = 0;
    for (const name of await readdir(path)) total += await duSize(join(path, name));
    return total;
  } catch {
    return 0;
  }
}
