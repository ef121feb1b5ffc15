import { StowageError } from '../../errors.js';

/*
 * Paths inside an archive. Every path here is relative to the archive root, slash-separated, with no
 * leading "/" and no "." or ".." components; "" is the root itself. Nothing that leaves the root is
 * ever accepted: not an entry name, not a symlink or hard link target, not a path named in a manifest.
 */

/** Longest entry name accepted (PATH_MAX is 4096 on Linux). */
export const MAX_ENTRY_PATH = 4096;
/** How many links one resolution may follow before it is treated as a loop (Linux's MAXSYMLINKS). */
export const MAX_LINK_HOPS = 40;

function unsafe(name: string, why: string): StowageError {
  const shown = name.length > 200 ? `${name.slice(0, 200)}…` : name;
  return new StowageError('UNSAFE_PATH', `unsafe archive path "${shown}": ${why}`, { details: { path: shown } });
}

/** Splits and normalises `rel` on top of `base` (both archive paths); throws when ".." climbs above the root. */
function normaliseOnto(base: string[], rel: string, original: string): string[] {
  const parts = [...base];
  for (const part of rel.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (parts.length === 0) throw unsafe(original, 'it escapes the archive root');
      parts.pop();
      continue;
    }
    parts.push(part);
  }
  return parts;
}

function checkName(name: string): void {
  if (typeof name !== 'string') throw unsafe(String(name), 'not a string');
  if (name.length > MAX_ENTRY_PATH) throw unsafe(name, `longer than ${MAX_ENTRY_PATH} characters`);
  if (name.includes('\0')) throw unsafe(name, 'it contains a NUL byte');
  if (name.startsWith('/')) throw unsafe(name, 'absolute paths are not allowed');
  // A Windows drive ("C:\x", "C:/x") is absolute on the platforms that would honour it.
  if (/^[A-Za-z]:[\\/]/.test(name) || name.startsWith('\\\\')) throw unsafe(name, 'absolute paths are not allowed');
}

/**
 * Normalises a tar entry name (or a path named inside an archive, e.g. in manifest.json): "./a//b/../c"
 * becomes "a/c", "./" becomes "". Throws UNSAFE_PATH for absolute names, NUL bytes and ".." that climbs
 * above the archive root at any point.
 */
export function safeEntryPath(name: string): string {
  checkName(name);
  return normaliseOnto([], name, name).join('/');
}

/** The directory part of an archive path ("" for a top-level entry). */
export function archiveDirname(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash === -1 ? '' : path.slice(0, slash);
}

/** The last component of an archive path. */
export function archiveBasename(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/**
 * Where a link entry points, as an archive path. A symlink's target is relative to the directory holding
 * the link (`a/layer.tar -> ../b/layer.tar` is `b/layer.tar`); a hard link's target is relative to the
 * archive root, as tar writes it. Absolute symlink targets and targets outside the archive are UNSAFE_PATH.
 */
export function resolveLinkTarget(entryPath: string, linkname: string, kind: 'symlink' | 'hardlink'): string {
  const entry = safeEntryPath(entryPath);
  const what = `${kind} "${entry}" -> "${String(linkname).slice(0, 200)}"`;
  if (typeof linkname !== 'string' || linkname === '') throw new StowageError('INVALID_ARCHIVE', `${what} has an empty target`);
  try {
    checkName(linkname);
  } catch {
    throw unsafe(entry, `${what} points outside the archive`);
  }
  const base = kind === 'symlink' ? archiveDirname(entry).split('/').filter(Boolean) : [];
  try {
    return normaliseOnto(base, linkname, linkname).join('/');
  } catch {
    throw unsafe(entry, `${what} points outside the archive`);
  }
}

/**
 * The links of an archive and path resolution through them: links to links, links in the middle of a path
 * (a symlinked directory), loops. Link targets are checked when added, so a resolved path never leaves the
 * archive; resolution itself refuses loops with INVALID_ARCHIVE.
 */
export class ArchiveLinks {
  private readonly links = new Map<string, string>();

  get size(): number {
    return this.links.size;
  }

  /** Records a link entry; returns its target as an archive path. */
  add(entryPath: string, linkname: string, kind: 'symlink' | 'hardlink'): string {
    const path = safeEntryPath(entryPath);
    const target = resolveLinkTarget(path, linkname, kind);
    this.links.set(path, target);
    return target;
  }

  has(path: string): boolean {
    return this.links.has(path);
  }

  /** The path after every link on the way has been followed (the path itself when no link is involved). */
  resolve(path: string): string {
    let parts = safeEntryPath(path).split('/').filter(Boolean);
    let hops = 0;
    let i = 0;
    while (i < parts.length) {
      const prefix = parts.slice(0, i + 1).join('/');
      const target = this.links.get(prefix);
      if (target === undefined) {
        i++;
        continue;
      }
      if (++hops > MAX_LINK_HOPS) {
        throw new StowageError('INVALID_ARCHIVE', `too many levels of links resolving "${path.slice(0, 200)}" (a link loop?)`);
      }
      parts = [...target.split('/').filter(Boolean), ...parts.slice(i + 1)];
      i = 0;
    }
    return parts.join('/');
  }
}
