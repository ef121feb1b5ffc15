import { createReadStream } from 'node:fs';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import tar from 'tar-stream';
import { type Digest, Digester } from '../../oci/digest.js';
import type { BlobInfo, ContentStoreApi, Lease } from '../../store/types.js';
import type { NodeMeta } from './tree.js';

/** One entry of a layer being built. Directories are written without a trailing slash in `path`. */
export interface LayerEntry {
  path: string;
  meta: NodeMeta;
  /** Absolute path of the file whose contents go in (files only). */
  source?: string | undefined;
}

function header(e: LayerEntry): tar.Header {
  const m = e.meta;
  const base = {
    name: e.meta.kind === 'directory' ? `${e.path}/` : e.path,
    mode: m.mode & 0o7777,
    uid: m.uid,
    gid: m.gid,
    mtime: m.mtime,
    uname: '',
    gname: '',
    linkname: '',
    size: 0,
    devmajor: 0,
    devminor: 0,
  };
  switch (m.kind) {
    case 'directory':
      return { ...base, type: 'directory' };
    case 'symlink':
      return { ...base, type: 'symlink', linkname: m.linkname ?? '' };
    default:
      return { ...base, type: 'file', size: m.size };
  }
}

/**
 * Streams a layer tar straight into the content store. The layer is stored uncompressed, so its
 * blob digest is also its diff_id. The layer is added to `lease` as it is committed.
 */
/** A stored layer: the gzip blob, and the digest of the tar inside it (its diff ID). */
export interface WrittenLayer extends BlobInfo {
  diffId: Digest;
}

/**
 * Stores the layer gzip-compressed, as dockerd pushes built layers (it keeps them unpacked locally; the
 * store keeps what is pushed). The same entries give the same bytes: the gzip header carries no time.
 */
export async function writeLayer(store: ContentStoreApi, entries: LayerEntry[], lease: Lease): Promise<WrittenLayer> {
  const pack = tar.pack();
  const digester = new Digester();
  const gzip = createGzip();
  const tarBytes = async function* (): AsyncGenerator<Buffer> {
    for await (const chunk of pack as unknown as AsyncIterable<Buffer>) {
      digester.update(chunk);
      yield chunk;
    }
  };
  const compressing = pipeline(Readable.from(tarBytes()), gzip);
  compressing.catch(() => undefined); // observed below
  const put = store.put(gzip, undefined, { lease });
  put.catch(() => undefined); // observed below
  try {
    for (const e of entries) {
      if (e.meta.kind === 'other') continue;
      const h = header(e);
      if (h.type !== 'file') {
        await new Promise<void>((resolve, reject) => {
          pack.entry(h, Buffer.alloc(0), (err) => (err ? reject(err) : resolve()));
        });
        continue;
      }
      let written = 0;
      await new Promise<void>((resolve, reject) => {
        const sink = pack.entry(h, (err) => (err ? reject(err) : resolve()));
        void (async () => {
          try {
            if (e.source !== undefined && h.size > 0) {
              for await (const chunk of createReadStream(e.source)) {
                const buf = chunk as Buffer;
                const room = h.size - written;
                const part = buf.byteLength > room ? buf.subarray(0, room) : buf;
                written += part.byteLength;
                if (part.byteLength > 0 && !sink.write(part)) await once(sink as unknown as NodeJS.EventEmitter, 'drain');
                if (written >= h.size) break;
              }
            }
            if (written < h.size) throw new Error(`file ${e.path} changed while it was being read`);
            (sink as unknown as { end(): void }).end();
          } catch (err) {
            sink.destroy(err as Error);
            reject(err as Error);
          }
        })();
      });
    }
    pack.finalize();
  } catch (err) {
    pack.destroy(err as Error);
    await Promise.allSettled([compressing, put]);
    throw err;
  }
  const [, blob] = await Promise.all([compressing, put]);
  return { ...blob, diffId: digester.digest() };
}
