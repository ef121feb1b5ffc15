import { gunzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { readAll } from './streams.js';

/**
 * Tars in memory for tests (they are small): build one from entries or from a file map, list one back.
 * Every entry has mtime 0 and uid/gid 0, so the same input gives the same bytes.
 */

export interface TarEntrySpec {
  name: string;
  data?: Buffer | string;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'fifo' | 'character-device';
  linkname?: string;
}

/** A whole tar of `entries`, in order: files 0644, everything else 0755. */
export async function tarOf(entries: TarEntrySpec[]): Promise<Buffer> {
  const pack = tar.pack();
  const done = readAll(pack as unknown as AsyncIterable<Uint8Array>);
  for (const e of entries) {
    const type = e.type ?? 'file';
    if (type === 'file') {
      const data = typeof e.data === 'string' ? Buffer.from(e.data) : (e.data ?? Buffer.alloc(0));
      await new Promise<void>((res, rej) => pack.entry({ name: e.name, mode: 0o644, mtime: new Date(0) }, data, (err) => (err ? rej(err) : res())));
    } else {
      await new Promise<void>((res, rej) =>
        pack.entry({ name: e.name, type, linkname: e.linkname, mode: 0o755, mtime: new Date(0) }, (err) => (err ? rej(err) : res())).end(undefined),
      );
    }
  }
  pack.finalize();
  return done;
}

/** A tar of the given files (name -> content) in name order, each preceded by its parent directories. */
export async function tarOfFiles(files: Record<string, string>): Promise<Buffer> {
  const entries: TarEntrySpec[] = [];
  const dirs = new Set<string>();
  for (const name of Object.keys(files).sort()) {
    const parts = name.split('/');
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (!dirs.has(d)) {
        dirs.add(d);
        entries.push({ name: `${d}/`, type: 'directory' });
      }
    }
    entries.push({ name, data: files[name]! });
  }
  return tarOf(entries);
}

export interface TarListingEntry {
  name: string;
  type: string;
  size: number;
  uid: number;
  gid: number;
  mode: number;
  data: Buffer;
}

/** The entries of a tar (plain or gzip), in order, with their contents. */
export async function tarListing(buf: Buffer): Promise<TarListingEntry[]> {
  if (buf[0] === 0x1f && buf[1] === 0x8b) buf = gunzipSync(buf);
  const extract = tar.extract();
  const out: TarListingEntry[] = [];
  const done = (async () => {
    for await (const entry of extract) {
      const data = await readAll(entry as unknown as AsyncIterable<Uint8Array>);
      const h = entry.header;
      out.push({ name: h.name, type: h.type, size: h.size ?? 0, uid: h.uid ?? 0, gid: h.gid ?? 0, mode: h.mode ?? 0, data });
    }
  })();
  extract.end(buf);
  await done;
  return out;
}
