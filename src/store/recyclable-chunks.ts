/**
 * Chunks a producer wants back once their bytes are used: a producer that reads into megabyte buffers
 * (a peer's blob body) reuses them instead of allocating a new one per megabyte, which V8 would collect
 * again and again (a full collection for every few dozen megabytes of such buffers). The consumer that is
 * last to touch a chunk (the ingest, once the bytes are hashed and on disk) calls recycleChunk; a chunk
 * never recycled is simply collected. A recycled chunk must not be read again by anyone.
 */

const RECYCLE = Symbol('stowage.recycle');

type Recyclable = Uint8Array & { [RECYCLE]?: () => void };

/** Marks `chunk` so that recycleChunk(chunk) calls `giveBack`. */
export function markRecyclable<T extends Uint8Array>(chunk: T, giveBack: () => void): T {
  (chunk as Recyclable)[RECYCLE] = giveBack;
  return chunk;
}

/** Hands `chunk` back to its producer, if it has one; a no-op for any other chunk. */
export function recycleChunk(chunk: Uint8Array): void {
  (chunk as Recyclable)[RECYCLE]?.();
}
