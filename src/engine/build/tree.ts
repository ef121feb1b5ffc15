import { link, mkdir, rm, symlink } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { decompress } from '../../oci/archive/gzip.js';
import tar from 'tar-stream';
import { StowageError } from '../../errors.js';
import { completeTarEnd } from './tar-end.js';
import { type NodeKind, parentOf, resolveInScope, safeEntryPath } from './paths.js';

/** What is known about one path of a file tree (a build context or an image's root filesystem). */
export interface NodeMeta {
  kind: NodeKind;
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
  size: number;
  linkname?: string | undefined;
}

/**
 * A file tree: the attributes of every path (kept here, not trusted from the disk, so that modes and
 * owners survive extraction by an unprivileged process) and, when `root` is set, the contents on disk.
 */
export class FileTree {
  readonly nodes = new Map<string, NodeMeta>();
  /** Small files captured while reading layers (etc/passwd, etc/group) for --chown name lookups. */
  readonly captured = new Map<string, Buffer>();

  constructor(readonly root: string | undefined) {
    this.nodes.set('', { kind: 'directory', mode: 0o755, uid: 0, gid: 0, mtime: new Date(0), size: 0 });
  }

  get(rel: string): NodeMeta | undefined {
    return this.nodes.get(rel);
  }

  abs(rel: string): string {
    if (this.root === undefined) throw new StowageError('INTERNAL', 'file tree has no contents on disk');
    return rel === '' ? this.root : join(this.root, rel);
  }

  resolve(rel: string, followLast = true): string {
    return resolveInScope(rel, (p) => this.nodes.get(p), followLast);
  }

  /** Direct children names of a directory, sorted. */
  children(rel: string): string[] {
    const prefix = rel === '' ? '' : `${rel}/`;
    const out: string[] = [];
    for (const key of this.nodes.keys()) {
      if (key === '' || !key.startsWith(prefix)) continue;
      const tail = key.slice(prefix.length);
      if (tail !== '' && !tail.includes('/')) out.push(tail);
    }
    return out.sort();
  }

  /** Every path below `rel` (not `rel` itself), parents before children. */
  descendants(rel: string): string[] {
    const prefix = rel === '' ? '' : `${rel}/`;
    const out: string[] = [];
    for (const key of this.nodes.keys()) if (key !== '' && key.startsWith(prefix)) out.push(key);
    return out.sort();
  }

  async removeSubtree(rel: string): Promise<void> {
    const prefix = `${rel}/`;
    for (const key of [...this.nodes.keys()]) if (key === rel || key.startsWith(prefix)) this.nodes.delete(key);
    if (this.root !== undefined && rel !== '') await rm(this.abs(rel), { recursive: true, force: true });
  }

  /** Makes sure every parent of `rel` exists as a directory (implicit ones get 0755 root:root). */
  async ensureParents(rel: string): Promise<void> {
    const parts = rel.split('/');
    parts.pop();
    let cur = '';
    for (const part of parts) {
      cur = cur === '' ? part : `${cur}/${part}`;
      const node = this.nodes.get(cur);
      if (node?.kind === 'directory') continue;
      if (node) await this.removeSubtree(cur); // a file or link where a directory must be
      this.nodes.set(cur, { kind: 'directory', mode: 0o755, uid: 0, gid: 0, mtime: new Date(), size: 0 });
      if (this.root !== undefined) await mkdir(this.abs(cur), { recursive: true });
    }
  }
}

export interface TarLimits {
  maxBytes: number;
  maxEntries: number;
}

export const DEFAULT_LIMITS: TarLimits = { maxBytes: 64 * 1024 ** 3, maxEntries: 2_000_000 };

/** Unwraps a possibly compressed tar stream (gzip or zstd) into a plain tar stream. */
export async function decompressed(source: AsyncIterable<Uint8Array>): Promise<Readable> {
  return (await decompress(source)).stream;
}

type EntryStream = AsyncIterable<unknown> & {
  header: tar.Header;
  resume(): unknown;
  once(event: string, fn: (...args: unknown[]) => void): unknown;
};

export interface ExtractOptions {
  /** Apply overlay whiteouts (.wh.name, .wh..wh..opq): true for image layers, false for a build context. */
  whiteouts: boolean;
  limits?: TarLimits;
  /** Paths whose contents (when small) are kept in tree.captured. */
  capture?: ReadonlySet<string>;
  /** Count bytes across several calls. */
  budget?: { bytes: number; entries: number };
  /** Accept an archive that stops at an entry boundary without end blocks, as Go's reader does (build contexts). */
  endAtEntryBoundary?: boolean;
}

/**
 * Reads a tar stream into a FileTree: records every entry's attributes and, when the tree has a root,
 * writes contents there. Entry names never leave the root; files are never written through symlinks.
 */
export async function extractInto(tree: FileTree, source: AsyncIterable<Uint8Array>, opts: ExtractOptions): Promise<void> {
  const limits = opts.limits ?? DEFAULT_LIMITS;
  const budget = opts.budget ?? { bytes: 0, entries: 0 };
  const thisLayer = new Set<string>();
  const extract = tar.extract();
  const handle = async (entry: EntryStream): Promise<void> => {
    // A truncated archive also errors the entry being read; the extractor reports it, so this must not
    // become an unhandled 'error' event (which would end the process).
    entry.once('error', () => undefined);
    const h = entry.header;
    budget.entries++;
    if (budget.entries > limits.maxEntries) throw new StowageError('TOO_LARGE', `archive has more than ${limits.maxEntries} entries`);
    const type = h.type ?? 'file';
    const rel = safeEntryPath(h.name);
    if (rel === '') {
      if (type === 'directory') {
        const root = tree.nodes.get('')!;
        root.mode = (h.mode ?? 0o755) & 0o7777;
        root.mtime = h.mtime ?? root.mtime;
      }
      entry.resume();
      return;
    }
    const base = rel.slice(rel.lastIndexOf('/') + 1);
    const parent = parentOf(rel);
    if (opts.whiteouts && base.startsWith('.wh.')) {
      entry.resume();
      if (base === '.wh..wh..opq') {
        for (const child of tree.children(parent)) {
          const p = parent === '' ? child : `${parent}/${child}`;
          if (!thisLayer.has(p)) await tree.removeSubtree(p);
        }
      } else {
        const victim = parent === '' ? base.slice(4) : `${parent}/${base.slice(4)}`;
        await tree.removeSubtree(victim);
      }
      return;
    }
    thisLayer.add(rel);
    await tree.ensureParents(rel);
    const existing = tree.nodes.get(rel);
    const meta: NodeMeta = {
      kind: 'other',
      mode: (h.mode ?? 0o644) & 0o7777,
      uid: h.uid ?? 0,
      gid: h.gid ?? 0,
      mtime: h.mtime ?? new Date(0),
      size: 0,
    };
    if (type === 'directory') {
      meta.kind = 'directory';
      if (existing && existing.kind !== 'directory') await tree.removeSubtree(rel);
      if (tree.root !== undefined) await mkdir(tree.abs(rel), { recursive: true });
      tree.nodes.set(rel, meta);
      entry.resume();
      return;
    }
    if (existing) await tree.removeSubtree(rel);
    if (type === 'symlink') {
      meta.kind = 'symlink';
      meta.linkname = h.linkname ?? '';
      if (tree.root !== undefined) await symlink(meta.linkname, tree.abs(rel));
      tree.nodes.set(rel, meta);
      entry.resume();
      return;
    }
    if (type === 'link') {
      const target = safeEntryPath(h.linkname ?? '');
      const tmeta = tree.nodes.get(target);
      entry.resume();
      if (!tmeta || tmeta.kind !== 'file') return; // dangling hard link: nothing to copy
      if (tree.root !== undefined) await link(tree.abs(target), tree.abs(rel));
      tree.nodes.set(rel, { ...tmeta });
      return;
    }
    if (type === 'file' || type === 'contiguous-file') {
      meta.kind = 'file';
      meta.size = h.size ?? 0;
      budget.bytes += meta.size;
      if (budget.bytes > limits.maxBytes) throw new StowageError('TOO_LARGE', `archive is larger than ${limits.maxBytes} bytes`);
      const capture = opts.capture?.has(rel) && meta.size <= 1024 * 1024;
      const chunks: Buffer[] = [];
      if (tree.root !== undefined) {
        const ws = createWriteStream(tree.abs(rel), { mode: (meta.mode & 0o777) | 0o600, flags: 'wx' });
        const tap = async function* (src: AsyncIterable<unknown>): AsyncGenerator<Buffer> {
          for await (const c of src) {
            if (capture) chunks.push(c as Buffer);
            yield c as Buffer;
          }
        };
        await pipeline(Readable.from(tap(entry)), ws);
      } else if (capture) {
        for await (const c of entry) chunks.push(c as Buffer);
      } else {
        for await (const _ of entry) {
          /* drain */
        }
      }
      if (capture) tree.captured.set(rel, Buffer.concat(chunks));
      tree.nodes.set(rel, meta);
      return;
    }
    // devices and fifos: known, never created on disk
    tree.nodes.set(rel, meta);
    entry.resume();
  };
  let failure: unknown;
  extract.on('entry', (_header, stream, next) => {
    handle(stream as unknown as EntryStream).then(
      () => next(),
      (err: unknown) => {
        failure ??= err;
        stream.resume();
        next(err as Error);
      },
    );
  });
  const finished = new Promise<void>((resolve, reject) => {
    extract.on('finish', () => resolve());
    extract.on('error', (err: unknown) => reject(failure ?? err));
    extract.on('close', () => reject(failure ?? new Error('archive ended early')));
  });
  try {
    const unpacked = await decompressed(source);
    const plain = opts.endAtEntryBoundary ? Readable.from(completeTarEnd(unpacked)) : unpacked;
    plain.on('error', (err) => {
      failure ??= err;
      extract.destroy(err);
    });
    plain.pipe(extract as unknown as NodeJS.WritableStream);
    await finished;
  } catch (err) {
    if (err instanceof StowageError) throw err;
    if (typeof (err as NodeJS.ErrnoException).syscall === 'string') throw err;
    throw new StowageError('INVALID_ARCHIVE', `invalid tar archive: ${(err as Error).message}`, { cause: err });
  }
}
