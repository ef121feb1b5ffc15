import { ContentStore } from './content-store.js';
import { ImageIndex } from './image-index.js';

export type * from './types.js';
export { ContentStore, DEFAULT_READ_LIMIT, type CommittedBlob } from './content-store.js';
export { ImageIndex, SCHEMA_VERSION } from './image-index.js';
export { collectGarbage, DEFAULT_GC_GRACE_MS, DEFAULT_STALE_INGEST_MS, type GcOptions, type GcResult } from './gc.js';

/** Opens (creating when needed) a machine's content store and image records under one directory. */
export async function openStore(root: string): Promise<{ store: ContentStore; images: ImageIndex }> {
  const store = await ContentStore.open(root);
  return { store, images: ImageIndex.open(store.root) };
}
