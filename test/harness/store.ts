import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { openStore } from '../../src/store/index.js';
import type { BlobInfo, ContentStoreApi, ImageIndexApi } from '../../src/store/types.js';
import { collect } from './streams.js';
import { tmpDir } from './tmp.js';

/**
 * Stores for tests: a fresh one in a temp dir, and what a user can see of one (to check that a
 * refused operation changed nothing).
 *
 *   const s = await freshStore();
 *   const before = await storeSnapshot(s);
 *   await expect(importArchive(bad, s)).rejects.toMatchObject({ code: 'INVALID_ARCHIVE' });
 *   expect(await storeSnapshot(s)).toEqual(before);
 */

export interface FreshStore {
  store: ContentStoreApi;
  images: ImageIndexApi;
  /** The store's root (a temp dir removed after the test file). */
  dir: string;
  /** Closes the image index. */
  close(): void;
}

/** Opens a store in a new temp dir. */
export async function freshStore(prefix = 'stowage-store-'): Promise<FreshStore> {
  const dir = await tmpDir(prefix);
  const { store, images } = await openStore(dir);
  return { store, images, dir, close: () => images.close() };
}

/** Every blob in the store, by digest. */
export async function listBlobs(store: Pick<ContentStoreApi, 'list'>): Promise<BlobInfo[]> {
  return (await collect(store.list())).sort((a, b) => a.digest.localeCompare(b.digest));
}

/** The ingest directories (resumable and in-flight uploads) under a store root, sorted. */
export async function ingestEntries(root: string): Promise<string[]> {
  return (await readdir(join(root, 'ingest'))).sort();
}

export interface StoreSnapshot {
  blobs: BlobInfo[];
  ingests: string[];
  images: unknown[];
  indexes: unknown[];
  tags: unknown[];
}

/** Everything a user can see of a store: blobs, leftover ingests, image records, indexes and tags. */
export async function storeSnapshot(target: { store: ContentStoreApi; images: ImageIndexApi }): Promise<StoreSnapshot> {
  return {
    blobs: await listBlobs(target.store),
    ingests: await ingestEntries(target.store.root),
    images: target.images.listImages(),
    indexes: target.images.listIndexes(),
    tags: target.images.listTags(),
  };
}
