import type { Readable } from 'node:stream';
import tar from 'tar-stream';
import { StowageError } from '../../errors.js';
import { safeEntryPath } from './paths.js';

/** One entry as handed to a reader: its normalised path and, for regular files, a stream of its bytes. */
export interface TarEntry {
  /** Normalised archive path (see safeEntryPath); "" for the root directory. */
  path: string;
  type: 'file' | 'directory' | 'symlink' | 'hardlink';
  size: number;
  /** For links: the raw link target as stored in the tar. */
  linkname: string;
  /** The bytes of a regular file; must be consumed (or left alone: the reader drains it). */
  body: AsyncIterable<Uint8Array>;
}

export interface TarReadLimits {
  /** Entries of any kind (files, directories, links); more is TOO_LARGE. */
  maxEntries: number;
  /** Bytes of one regular file; more is TOO_LARGE. */
  maxEntryBytes: number;
}

function asArchiveError(err: unknown): StowageError {
  if (err instanceof StowageError) return err;
  const msg = (err as Error)?.message ?? String(err);
  return new StowageError('INVALID_ARCHIVE', `invalid tar archive (corrupt, truncated or not a tar): ${msg}`, { cause: err });
}

/**
 * Reads a tar stream entry by entry, one at a time, awaiting `onEntry` for each. Entry names are checked
 * with safeEntryPath (UNSAFE_PATH), entry counts and sizes against `limits` (TOO_LARGE); devices and fifos
 * are INVALID_ARCHIVE; a stream that is not a tar or ends inside an entry is INVALID_ARCHIVE.
 */
export async function readTar(
  source: Readable,
  limits: TarReadLimits,
  onEntry: (entry: TarEntry) => Promise<void>,
): Promise<void> {
  const extract = tar.extract();
  let failure: StowageError | undefined;
  let entries = 0;
  /** The handler of the current entry: waited for before failing, so no caller work outlives readTar. */
  let inFlight: Promise<void> | undefined;

  const handle = async (header: tar.Header, stream: AsyncIterable<Uint8Array>): Promise<void> => {
    entries++;
    if (entries > limits.maxEntries) {
      throw new StowageError('TOO_LARGE', `archive has more than ${limits.maxEntries} entries`, {
        details: { limit: limits.maxEntries },
      });
    }
    const path = safeEntryPath(header.name);
    const kind = header.type ?? 'file';
    let type: TarEntry['type'];
    switch (kind) {
      case 'file':
      case 'contiguous-file':
        type = 'file';
        break;
      case 'directory':
        type = 'directory';
        break;
      case 'symlink':
        type = 'symlink';
        break;
      case 'link':
        type = 'hardlink';
        break;
      default:
        throw new StowageError('INVALID_ARCHIVE', `archive entry "${path.slice(0, 200)}" is a ${kind}; image archives hold only files, directories and links`);
    }
    const size = type === 'file' ? (header.size ?? 0) : 0;
    if (size > limits.maxEntryBytes) {
      throw new StowageError('TOO_LARGE', `archive entry "${path.slice(0, 200)}" is ${size} bytes; the limit is ${limits.maxEntryBytes}`, {
        details: { path: path.slice(0, 200), size, limit: limits.maxEntryBytes },
      });
    }
    const body = (async function* (): AsyncGenerator<Uint8Array> {
      try {
        for await (const chunk of stream) yield chunk;
      } catch (err) {
        throw asArchiveError(failure ?? err);
      }
    })();
    await onEntry({ path, type, size, linkname: header.linkname ?? '', body });
  };

  const done = new Promise<void>((resolve, reject) => {
    extract.on('entry', (header, stream, next) => {
      // Destroying the extract destroys the open entry with the same error: reported once, by the extract.
      stream.on('error', () => undefined);
      inFlight = handle(header, stream as unknown as AsyncIterable<Uint8Array>);
      inFlight.then(
        () => {
          stream.resume(); // drains whatever the handler left unread
          next();
        },
        (err: unknown) => {
          failure ??= asArchiveError(err);
          stream.resume();
          next(failure);
        },
      );
    });
    extract.on('finish', () => resolve());
    extract.on('error', (err: unknown) => reject(failure ?? asArchiveError(err)));
    extract.on('close', () => reject(failure ?? new StowageError('INVALID_ARCHIVE', 'invalid tar archive: it ended early')));
  });
  source.on('error', (err) => {
    failure ??= asArchiveError(err);
    extract.destroy(failure);
  });
  source.pipe(extract as unknown as NodeJS.WritableStream);
  try {
    await done;
  } catch (err) {
    source.destroy();
    await inFlight?.catch(() => undefined);
    throw failure ?? asArchiveError(err);
  }
}
