import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import dockerignoreModule from '@balena/dockerignore';
import { StowageError } from '../../errors.js';
import { looksCompressed, peekStream } from '../../oci/archive/gzip.js';
import { type TarLimits, DEFAULT_LIMITS, FileTree, extractInto } from './tree.js';

type IgnoreFactory = typeof dockerignoreModule.default;
// A CommonJS module: at run time the default import is the factory itself.
const dockerignore: IgnoreFactory =
  (dockerignoreModule as unknown as { default?: IgnoreFactory }).default ?? (dockerignoreModule as unknown as IgnoreFactory);

/**
 * The build context: the request body (a tar, maybe gzip or zstd) unpacked under the build's work directory,
 * with `.dockerignore` applied (the docker CLI filters too, but raw API clients may not).
 */
export async function loadContext(body: AsyncIterable<Uint8Array>, dir: string, limits: TarLimits = DEFAULT_LIMITS): Promise<FileTree> {
  await mkdir(dir, { recursive: true });
  const tree = new FileTree(dir);
  // `docker build - < Dockerfile` sends the Dockerfile itself, not a tar: sniff the first block.
  const { head, stream } = await peekStream(body, 512);
  const compressed = looksCompressed(head);
  const isTar = head.length >= 262 && head.subarray(257, 262).toString('latin1') === 'ustar';
  if (!compressed && !isTar && head.length > 0) {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of stream) {
      size += c.byteLength;
      if (size > MAX_PLAIN_DOCKERFILE) throw new StowageError('TOO_LARGE', `the Dockerfile sent as the request body is larger than ${MAX_PLAIN_DOCKERFILE} bytes`);
      chunks.push(Buffer.from(c));
    }
    const data = Buffer.concat(chunks);
    await writeFile(join(dir, 'Dockerfile'), data);
    tree.nodes.set('Dockerfile', { kind: 'file', mode: 0o644, uid: 0, gid: 0, mtime: new Date(), size: data.length });
    return tree;
  }
  try {
    await extractInto(tree, stream, { whiteouts: false, limits, endAtEntryBoundary: true });
  } catch (err) {
    if (err instanceof StowageError && (err.code === 'INVALID_ARCHIVE' || err.code === 'UNSAFE_PATH' || err.code === 'TOO_LARGE' || err.code === 'UNSUPPORTED')) {
      throw new StowageError('BAD_REQUEST', `failed to read the build context: ${err.message}`, { status: err.code === 'TOO_LARGE' ? 413 : 400, cause: err });
    }
    throw err;
  }
  return tree;
}

const MAX_PLAIN_DOCKERFILE = 16 * 1024 * 1024;

/** Reads a file of the context (following symlinks within it); undefined when it is not a file. */
export async function readContextFile(tree: FileTree, rel: string, limit = 16 * 1024 * 1024): Promise<Buffer | undefined> {
  const resolved = tree.resolve(rel);
  const node = tree.get(resolved);
  if (!node || node.kind !== 'file') return undefined;
  if (node.size > limit) throw new StowageError('TOO_LARGE', `${rel} is larger than ${limit} bytes`);
  return readFile(tree.abs(resolved));
}

/**
 * Drops what `.dockerignore` excludes. A directory stays when something below it is re-included
 * with `!`. The Dockerfile and .dockerignore were read before this and are removed only when they
 * are themselves excluded (as dockerd does).
 */
export async function applyDockerignore(tree: FileTree, rules: string): Promise<string[]> {
  const ig = dockerignore().add(rules);
  const removed: string[] = [];
  const paths = [...tree.nodes.keys()].filter((p) => p !== '').sort();
  const kept = new Set<string>();
  const excluded = new Set<string>();
  for (const p of paths) {
    if (ig.ignores(p)) excluded.add(p);
    else kept.add(p);
  }
  // A kept path keeps its parents.
  for (const p of kept) {
    let parent = p;
    for (;;) {
      const i = parent.lastIndexOf('/');
      if (i < 0) break;
      parent = parent.slice(0, i);
      excluded.delete(parent);
    }
  }
  // Remove deepest first so a parent's removal does not pre-empt a kept child.
  for (const p of [...excluded].sort((a, b) => b.length - a.length)) {
    const node = tree.get(p);
    if (!node) continue;
    if (node.kind === 'directory' && tree.descendants(p).some((d) => !excluded.has(d))) continue;
    await tree.removeSubtree(p);
    removed.push(p);
  }
  return removed;
}
