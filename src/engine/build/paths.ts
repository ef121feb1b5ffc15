import { StowageError } from '../../errors.js';
import { safeEntryPath as safeArchivePath } from '../../oci/archive/paths.js';
import { goPatternRegExp } from '../params.js';

/**
 * Path helpers shared by the build context, layer and rootfs code. All paths here are relative,
 * slash-separated, without a leading "/" and without "." or ".." components ("" is the root).
 */

/**
 * Normalises a layer or context tar entry name with the archive rules (oci/archive/paths.ts), except that
 * a leading "/" means the root, as Docker's untar reads layer entries; ".." above the root stays refused.
 */
export function safeEntryPath(name: string): string {
  return safeArchivePath(name.replace(/^\/+/, ''));
}

/** Cleans a path like Go's filepath.Clean, clamping ".." at the root; result is relative. */
export function cleanInRoot(p: string): string {
  const out: string[] = [];
  for (const part of p.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') out.pop();
    else out.push(part);
  }
  return out.join('/');
}

/** True when a (context-relative) source path climbs above the root at some point. */
export function escapesRoot(p: string): boolean {
  let depth = 0;
  for (const part of p.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      depth--;
      if (depth < 0) return true;
    } else depth++;
  }
  return false;
}

export function parentOf(rel: string): string {
  const i = rel.lastIndexOf('/');
  return i < 0 ? '' : rel.slice(0, i);
}

export function joinRel(a: string, b: string): string {
  if (a === '') return b;
  if (b === '') return a;
  return `${a}/${b}`;
}

export type NodeKind = 'file' | 'directory' | 'symlink' | 'other';

/**
 * Resolves `rel` inside a tree, following symlinks but never leaving the root (like Docker's
 * FollowSymlinkInScope). `lookup` tells what a (resolved-parent) path is. When `followLast` is
 * false a final symlink is returned as is.
 */
export function resolveInScope(
  rel: string,
  lookup: (p: string) => { kind: NodeKind; linkname?: string | undefined } | undefined,
  followLast = true,
): string {
  let todo = rel.split('/').filter((x) => x !== '' && x !== '.');
  let resolved: string[] = [];
  let hops = 0;
  while (todo.length > 0) {
    const part = todo.shift()!;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const candidate = [...resolved, part].join('/');
    const node = lookup(candidate);
    if (node?.kind === 'symlink' && node.linkname !== undefined && (followLast || todo.length > 0)) {
      if (++hops > 255) throw new StowageError('BAD_REQUEST', `too many levels of symbolic links resolving ${rel}`);
      const target = node.linkname.split('/').filter((x) => x !== '' && x !== '.');
      if (node.linkname.startsWith('/')) resolved = [];
      todo = [...target, ...todo];
      continue;
    }
    resolved.push(part);
  }
  return resolved.join('/');
}

/** Go's filepath.Match for one path segment; a malformed pattern fails the build, as with Docker. */
export function matchSegment(pattern: string, name: string): boolean {
  const re = goPatternRegExp(pattern);
  if (!re) throw new StowageError('BAD_REQUEST', `syntax error in pattern "${pattern}"`);
  return re.test(name);
}

export function hasWildcards(p: string): boolean {
  return /[*?[]/.test(p);
}
