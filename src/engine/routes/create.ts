import { randomUUID } from 'node:crypto';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import tar from 'tar-stream';
import { StowageError } from '../../errors.js';
import { type Digest, Digester } from '../../oci/digest.js';
import { decompress } from '../../oci/archive/gzip.js';
import { safeEntryPath } from '../../oci/archive/paths.js';
import { MediaType } from '../../oci/media-types.js';
import { defaultPlatform, parsePlatform } from '../../oci/platform.js';
import { type ImageReference, parseReference, withDefaultTag, withTag } from '../../oci/reference.js';
import { applyChanges, type ImageContainerConfig } from '../changes.js';
import type { Lease } from '../../store/types.js';
import { DEFAULT_MAX_IMPORT_BYTES, type EngineContext } from '../context.js';
import { DEFAULT_FETCH_POLICY, fetchUnderPolicy } from '../fetch-policy.js';
import { listParam, strParam } from '../params.js';
import { openJsonStream } from '../stream.js';
import { recordImage, writeImage } from '../store-image.js';
import { handlePull } from './pull.js';

/**
 * POST /images/create: `fromImage` is a pull (handlePull in ./pull.js), `fromSrc` an
 * import of a root filesystem tarball (here).
 */

/** Most entries a rootfs tarball may have. */
const MAX_IMPORT_ENTRIES = 5_000_000;

/** The repo/tag of an import (or undefined when the image is left untagged). */
export function importReference(repo: string | undefined, tag: string | undefined): ImageReference | undefined {
  if (!repo) return undefined;
  let ref: ImageReference;
  try {
    ref = parseReference(repo);
    if (ref.digest !== undefined) throw new StowageError('BAD_REQUEST', 'cannot import digest reference');
    if (tag) ref = withTag(ref, tag);
    else ref = withDefaultTag(ref);
  } catch (err) {
    if (err instanceof StowageError && err.code === 'BAD_REQUEST') throw err;
    throw new StowageError('BAD_REQUEST', (err as Error).message);
  }
  return ref;
}

/**
 * A root filesystem entry must stay inside the root, as dockerd's layer unpacking insists ("breakout"): no
 * absolute name, no ".." climbing out, and no hard link to such a path. Symlink targets are left alone: they
 * are resolved inside the container's root.
 */
function checkRootfsEntry(header: tar.Header): void {
  safeEntryPath(header.name);
  if (header.type === 'link') safeEntryPath(header.linkname ?? '');
}

/** A pass-through that hashes the uncompressed tar (the diff_id) and checks it is a well-formed tar. */
class TarCheck extends Transform {
  readonly digester = new Digester();
  private readonly extract = tar.extract();
  private entries = 0;
  private bytes = 0;
  private failure: Error | undefined;
  private readonly done: Promise<void>;

  constructor(private readonly maxBytes: number) {
    super();
    this.done = new Promise<void>((resolve, reject) => {
      this.extract.on('entry', (header, stream, next) => {
        // Destroying the extract destroys the open entry with the same error: reported once, by the extract.
        stream.on('error', () => undefined);
        this.entries++;
        try {
          if (this.entries > MAX_IMPORT_ENTRIES) throw new StowageError('TOO_LARGE', `the archive has more than ${MAX_IMPORT_ENTRIES} entries`);
          checkRootfsEntry(header);
        } catch (err) {
          this.failure = err as Error;
          this.extract.destroy(err as Error);
          return;
        }
        stream.on('end', () => next());
        stream.resume();
      });
      this.extract.on('finish', () => resolve());
      this.extract.on('error', (err) => {
        // A corrupt tar stops the import at the next chunk rather than after the rest of the body.
        this.failure ??= err;
        reject(err);
      });
    });
    this.done.catch(() => undefined);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    // A refused entry stops the import at once rather than after the rest of the body.
    if (this.failure) {
      cb(asTarError(this.failure));
      return;
    }
    this.bytes += chunk.length;
    if (this.bytes > this.maxBytes) {
      cb(new StowageError('TOO_LARGE', `the root filesystem is larger than ${this.maxBytes} bytes uncompressed`));
      return;
    }
    this.digester.update(chunk);
    if (this.extract.destroyed) {
      cb(null, chunk);
      return;
    }
    if (this.extract.write(chunk)) {
      cb(null, chunk);
      return;
    }
    // A refused entry or a corrupt header destroys the extract while it is full: 'drain' never comes then,
    // so 'close' settles the wait too (the failure is reported by the next chunk or by _flush).
    const settle = (): void => {
      this.extract.off('drain', settle);
      this.extract.off('close', settle);
      cb(null, chunk);
    };
    this.extract.once('drain', settle);
    this.extract.once('close', settle);
  }

  override _flush(cb: TransformCallback): void {
    this.extract.end(undefined);
    this.done.then(
      () => cb(),
      (err: unknown) => cb(asTarError(err)),
    );
  }

  get count(): number {
    return this.entries;
  }
}

function asTarError(err: unknown): StowageError {
  if (err instanceof StowageError) return err;
  return new StowageError('INVALID_ARCHIVE', `invalid tar archive (corrupt, truncated or not a tar): ${(err as Error)?.message ?? String(err)}`);
}

export interface ImportRootfsOptions {
  reference?: ImageReference | undefined;
  /** History comment; Docker's default is "Imported from <src>". */
  message: string;
  changes: string[];
  platform?: { os: string; architecture: string; variant?: string | undefined };
}

/**
 * Imports a root filesystem tarball (plain or gzip) as a one-layer image: the layer is stored gzip, the
 * config carries the applied changes and one history entry. Nothing is recorded unless it all succeeds.
 * Returns the image ID.
 */
export async function importRootfs(ctx: EngineContext, source: AsyncIterable<Uint8Array>, opts: ImportRootfsOptions): Promise<Digest> {
  const config0 = applyChanges({}, opts.changes);
  const { stream } = await decompress(source);
  // Holds the layer, config and manifest from their commits until the record is written.
  const lease = ctx.store.lease();
  try {
    return await importLeased(ctx, stream, opts, config0, lease);
  } finally {
    lease.release();
  }
}

async function importLeased(
  ctx: EngineContext,
  stream: AsyncIterable<Uint8Array>,
  opts: ImportRootfsOptions,
  config0: ImageContainerConfig,
  lease: Lease,
): Promise<Digest> {
  const check = new TarCheck(ctx.maxImportBytes ?? DEFAULT_MAX_IMPORT_BYTES);
  const gzip = createGzip();
  const ingest = await ctx.store.openIngest(`import-${randomUUID()}`);
  let layer;
  try {
    // Both settle before the ingest is touched again: a write still unwinding would refuse the abort.
    const results = await Promise.allSettled([pipeline(stream, check, gzip), ingest.write(gzip)]);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
    layer = await ingest.commit({}, { lease });
  } catch (err) {
    await ingest.abort().catch(() => undefined);
    throw asTarError(err);
  }
  const diffId = check.digester.digest();
  const platform = opts.platform ?? defaultPlatform();
  const created = new Date().toISOString();
  const imageConfig = {
    architecture: platform.architecture,
    ...(platform.variant ? { variant: platform.variant } : {}),
    os: platform.os,
    comment: opts.message,
    config: normaliseConfig(config0),
    created,
    history: [{ created, comment: opts.message }],
    rootfs: { type: 'layers', diff_ids: [diffId] },
  };
  const record = await writeImage(ctx.store, {
    config: imageConfig,
    layers: [{ mediaType: MediaType.DockerLayerGzip, digest: layer.digest, size: layer.size }],
    manifestMediaType: MediaType.DockerManifest,
    platform: { os: platform.os, architecture: platform.architecture, ...(platform.variant ? { variant: platform.variant } : {}) },
  }, lease);
  recordImage(ctx.images, record, opts.reference ? [opts.reference] : []);
  return record.configDigest;
}

/** Docker writes every container.Config field; keep the ones set plus Docker's nulls for lists. */
function normaliseConfig(c: ImageContainerConfig): Record<string, unknown> {
  return {
    Hostname: '',
    Domainname: '',
    User: c.User ?? '',
    AttachStdin: false,
    AttachStdout: false,
    AttachStderr: false,
    ...(c.ExposedPorts ? { ExposedPorts: c.ExposedPorts } : {}),
    Tty: false,
    OpenStdin: false,
    StdinOnce: false,
    Env: c.Env ?? null,
    Cmd: c.Cmd ?? null,
    Image: '',
    Volumes: c.Volumes ?? null,
    WorkingDir: c.WorkingDir ?? '',
    Entrypoint: c.Entrypoint ?? null,
    OnBuild: c.OnBuild ?? null,
    Labels: c.Labels ?? null,
    ...(c.StopSignal ? { StopSignal: c.StopSignal } : {}),
  };
}

/** fromSrc: "-" reads the request body; an http(s) URL is downloaded under the engine's fetch policy. */
async function openSource(src: string, request: FastifyRequest, ctx: EngineContext): Promise<AsyncIterable<Uint8Array>> {
  if (src === '-') return request.raw;
  let url: URL;
  try {
    url = new URL(src);
  } catch {
    throw new StowageError('BAD_REQUEST', `invalid fromSrc: ${src} is neither "-" nor a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new StowageError('BAD_REQUEST', `invalid fromSrc: unsupported URL scheme ${url.protocol}`);
  }
  request.raw.resume();
  return (await fetchUnderPolicy(ctx.fetch ?? DEFAULT_FETCH_POLICY, url.href)).body;
}

async function handleImport(request: FastifyRequest, reply: FastifyReply, ctx: EngineContext): Promise<FastifyReply> {
  const q = (request.query ?? {}) as Record<string, unknown>;
  const src = strParam(q, 'fromSrc') ?? '-';
  const out = openJsonStream(reply);
  try {
    const reference = importReference(strParam(q, 'repo'), strParam(q, 'tag'));
    const message = strParam(q, 'message') || `Imported from ${src}`;
    const changes = listParam(q, 'changes');
    // Refuse bad changes before reading a byte of the body.
    applyChanges({}, changes);
    const platformParam = strParam(q, 'platform');
    let platform: ImportRootfsOptions['platform'];
    if (platformParam) {
      const p = parsePlatform(platformParam);
      platform = { os: p.os, architecture: p.architecture, variant: p.variant };
    }
    const source = await openSource(src, request, ctx);
    const id = await importRootfs(ctx, source, { reference, message, changes, platform });
    out.write({ status: id });
    out.end();
  } catch (err) {
    if (!request.raw.readableEnded) request.raw.resume();
    out.error(err);
  }
  return reply;
}

export function register(app: FastifyInstance, ctx: EngineContext): void {
  app.post('/images/create', async (request, reply) => {
    const q = (request.query ?? {}) as Record<string, unknown>;
    if (strParam(q, 'fromImage')) {
      await handlePull(request, reply, ctx);
      return reply;
    }
    if (strParam(q, 'fromSrc') !== undefined) return handleImport(request, reply, ctx);
    throw new StowageError('BAD_REQUEST', 'either fromImage or fromSrc must be set');
  });
}
