import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { StowageError, isStowageError } from '../../errors.js';
import { type Digest, isDigest } from '../../oci/digest.js';
import { type Descriptor, type ImageIndex, type ImageManifest, parseImageConfig, parseManifestBytes } from '../../oci/manifest.js';
import { type Platform, choosePlatform, defaultPlatform, formatPlatform, parsePlatform } from '../../oci/platform.js';
import {
  type ImageReference,
  familiarName,
  familiarString,
  formatReference,
  parseReference,
  repository,
  withDefaultTag,
} from '../../oci/reference.js';
import type { EngineContext } from '../context.js';
import { ProgressThrottle, progressMessage } from '../jsonprogress.js';
import { type RegistryAuth, decodeRegistryAuth, registryClientFor, registryConfigAuth } from '../registry-auth.js';
import { type EngineRegistry, RegistryHttpError } from '../remote.js';
import { lazyJsonStream } from './json-stream.js';

export interface PullOutcome {
  /** The normalised reference that was pulled. */
  reference: string;
  /** What the reference resolves to: a manifest or an index digest. */
  target: Digest;
  /** The platform manifest that is now stored. */
  manifestDigest: Digest;
  /** False when everything was already there ("Image is up to date"). */
  downloaded: boolean;
}

type Emit = (msg: Record<string, unknown>) => void;

const CONCURRENT_DOWNLOADS = 3;

function shortId(d: string): string {
  return d.replace(/^sha256:/, '').slice(0, 12);
}

/** Words a pull failure the way dockerd does (distribution.TranslatePullError). */
export function translatePullError(err: unknown, ref: ImageReference, platform?: Platform): StowageError {
  if (err instanceof RegistryHttpError) {
    const rc = err.http.registryCode;
    if (rc === 'MANIFEST_UNKNOWN' || (err.http.status === 404 && rc === undefined)) {
      return new StowageError('MANIFEST_NOT_FOUND', `manifest for ${familiarString(ref)} not found: ${err.registryText}`, { status: 404 });
    }
    if (rc === 'NAME_UNKNOWN') {
      return new StowageError('IMAGE_NOT_FOUND', `repository ${familiarName(ref)} not found: ${err.registryText}`, { status: 404 });
    }
    if (rc === 'DENIED' || rc === 'UNAUTHORIZED' || err.http.status === 401 || err.http.status === 403) {
      return new StowageError(
        'DENIED',
        `pull access denied for ${familiarName(ref)}, repository does not exist or may require 'docker login': ${err.registryText}`,
        { status: 404 },
      );
    }
    return new StowageError('REGISTRY_ERROR', err.message, { status: 500 });
  }
  if (isStowageError(err, 'PLATFORM_NOT_FOUND')) {
    return new StowageError('PLATFORM_NOT_FOUND', `no matching manifest for ${formatPlatform(platform ?? defaultPlatform())} in the manifest list entries`, { status: 404 });
  }
  if (isStowageError(err)) return err;
  const e = err as NodeJS.ErrnoException;
  if (e && typeof e.code === 'string') {
    return new StowageError('REGISTRY_ERROR', `Get "${ref.domain}/v2/": ${e.message}`, { status: 500 });
  }
  return new StowageError('INTERNAL', (err as Error)?.message ?? String(err));
}

/** Counts bytes flowing from a registry into the store and reports Docker "Downloading" progress. */
async function* counting(source: AsyncIterable<Uint8Array>, onBytes: (n: number) => void): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) {
    onBytes(chunk.byteLength);
    yield chunk;
  }
}

/**
 * Pulls `ref` into the store with Docker's progress messages. Throws (already translated) before the
 * first message when the manifest cannot be had, so callers can still answer with an HTTP status.
 */
export async function pullWithProgress(
  ctx: EngineContext,
  ref: ImageReference,
  platform: Platform | undefined,
  auth: RegistryAuth | undefined,
  emit: Emit,
  signal?: AbortSignal,
): Promise<PullOutcome> {
  const client = registryClientFor(ctx, ref.domain, auth);
  const tagOrDigest = ref.digest ?? ref.tag ?? 'latest';
  const want = platform ?? defaultPlatform();
  try {
    const top = await client.getManifest(ref.path, tagOrDigest);
    emit({ status: `Pulling from ${ref.path}`, id: tagOrDigest });
    const parsedTop = parseManifestBytes(top.bytes, top.mediaType);
    let manifestBytes = top.bytes;
    let manifestDigest = top.digest;
    let manifestMediaType: string = parsedTop.mediaType;
    let manifest: ImageManifest;
    let index: ImageIndex | undefined;
    let childPlatform: Platform | undefined;
    if (parsedTop.kind === 'index') {
      index = parsedTop.index;
      const chosen = choosePlatform(index.manifests, want);
      childPlatform = chosen.platform as Platform | undefined;
      const child = await client.getManifest(ref.path, chosen.digest);
      const parsedChild = parseManifestBytes(child.bytes, child.mediaType);
      if (parsedChild.kind !== 'manifest') throw new StowageError('INVALID_MANIFEST', `index child ${chosen.digest} is not an image manifest`);
      manifest = parsedChild.manifest;
      manifestBytes = child.bytes;
      manifestDigest = child.digest;
      manifestMediaType = parsedChild.mediaType;
    } else {
      manifest = parsedTop.manifest;
    }

    const previous = ref.tag !== undefined ? ctx.images.resolveTag(formatReference(ref)) : undefined;
    let downloaded = false;
    const throttle = new ProgressThrottle();
    const layers = manifest.layers;
    const present = await Promise.all(layers.map((l) => ctx.store.has(l.digest)));
    layers.forEach((l, i) => {
      emit({ status: present[i] ? 'Already exists' : 'Pulling fs layer', progressDetail: {}, id: shortId(l.digest) });
    });
    const missing = layers.map((l, i) => ({ l, i })).filter((x) => !present[x.i]);
    if (missing.length > CONCURRENT_DOWNLOADS) {
      for (const { l } of missing.slice(CONCURRENT_DOWNLOADS)) emit({ status: 'Waiting', progressDetail: {}, id: shortId(l.digest) });
    }

    const fetchBlob = async (d: Descriptor, progress: boolean): Promise<void> => {
      const id = shortId(d.digest);
      const start = Date.now() / 1000;
      let current = 0;
      const body = await client.getBlob(ref.path, d.digest);
      await ctx.store.put(
        counting(body, (n) => {
          if (signal?.aborted) throw new StowageError('CONFLICT', 'pull cancelled: the client went away');
          current += n;
          if (progress && throttle.shouldSend(id, current >= d.size)) emit(progressMessage('Downloading', id, current, d.size, start));
        }),
        { digest: d.digest, size: d.size },
      );
      downloaded = true;
      if (progress) {
        emit({ status: 'Verifying Checksum', progressDetail: {}, id });
        emit({ status: 'Download complete', progressDetail: {}, id });
      }
    };

    // Up to three downloads at a time; layers "complete" in order, as Docker shows them.
    const done = new Map<number, Promise<void>>();
    let next = 0;
    const workers = Array.from({ length: Math.min(CONCURRENT_DOWNLOADS, missing.length) }, async () => {
      while (next < missing.length) {
        const item = missing[next++]!;
        const p = fetchBlob(item.l, true);
        done.set(item.i, p);
        p.catch(() => undefined);
        await p;
      }
    });
    const completion = (async () => {
      for (const { l, i } of missing) {
        while (!done.has(i)) await new Promise((r) => setTimeout(r, 5));
        await done.get(i);
        emit(progressMessage('Extracting', shortId(l.digest), l.size, l.size));
        emit({ status: 'Pull complete', progressDetail: {}, id: shortId(l.digest) });
      }
    })();
    const results = await Promise.allSettled([...workers, completion]);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;

    if (!(await ctx.store.has(manifest.config.digest))) await fetchBlob(manifest.config, false);
    const configBytes = await ctx.store.readBytes(manifest.config.digest);
    const config = parseImageConfig(configBytes);
    if (!(await ctx.store.has(manifestDigest))) {
      await ctx.store.putBytes(manifestBytes, { digest: manifestDigest });
      downloaded = true;
    }
    const p: Platform = childPlatform ?? { os: config.os, architecture: config.architecture, ...(config.variant ? { variant: config.variant } : {}) };
    ctx.images.putImage({
      manifestDigest,
      manifestMediaType,
      configDigest: manifest.config.digest,
      platform: { os: p.os, architecture: p.architecture, ...(p.variant ? { variant: p.variant } : {}) },
      layers: layers.map((l) => l.digest),
      size: manifestBytes.length + manifest.config.size + layers.reduce((n, l) => n + l.size, 0),
      created: config.created,
      labels: (config.config?.Labels as Record<string, string> | null | undefined) ?? {},
    });
    if (index) {
      if (!(await ctx.store.has(top.digest))) {
        await ctx.store.putBytes(top.bytes, { digest: top.digest });
        downloaded = true;
      }
      const existing = ctx.images.getIndex(top.digest);
      ctx.images.putIndex({
        indexDigest: top.digest,
        mediaType: parsedTop.mediaType,
        children: index.manifests.map((c) => ({
          digest: c.digest,
          platform: c.platform as Platform | undefined,
          present: c.digest === manifestDigest || ctx.images.getImage(c.digest) !== undefined || (existing?.children.find((x) => x.digest === c.digest)?.present ?? false),
        })),
      });
    }
    const target = top.digest;
    if (ref.tag !== undefined) ctx.images.tag(formatReference(ref), target);
    ctx.images.addRepoDigest({ repository: repository(ref), digest: target, manifestDigest });

    emit({ status: `Digest: ${target}` });
    const upToDate = !downloaded && (ref.tag === undefined || previous === target);
    emit({ status: `Status: ${upToDate ? 'Image is up to date for' : 'Downloaded newer image for'} ${familiarString(ref)}` });
    return { reference: formatReference(ref), target, manifestDigest, downloaded: !upToDate };
  } catch (err) {
    throw translatePullError(err, ref, want);
  }
}

/** The reference of POST /images/create?fromImage=&tag= ("tag" may be a digest). */
export function pullReference(fromImage: string, tag: string | undefined): ImageReference {
  let ref = parseReference(fromImage);
  if (tag !== undefined && tag !== '') {
    if (isDigest(tag)) {
      ref = { domain: ref.domain, path: ref.path, digest: tag };
    } else if (/^[\w][\w.-]{0,127}$/.test(tag)) {
      ref = { domain: ref.domain, path: ref.path, tag };
    } else {
      throw new StowageError('INVALID_REFERENCE', 'invalid reference format');
    }
  }
  return withDefaultTag(ref);
}

function one(v: unknown): string | undefined {
  if (Array.isArray(v)) v = v[v.length - 1];
  return typeof v === 'string' ? v : undefined;
}

/** POST /images/create?fromImage=…: called by create.ts. */
export async function handlePull(request: FastifyRequest, reply: FastifyReply, ctx: EngineContext): Promise<FastifyReply | void> {
  const q = request.query as Record<string, unknown>;
  const stream = lazyJsonStream(reply);
  let ref: ImageReference;
  let platform: Platform | undefined;
  let auth: RegistryAuth | undefined;
  try {
    ref = pullReference(one(q['fromImage']) ?? '', one(q['tag']));
    const p = one(q['platform']);
    platform = p ? parsePlatform(p) : undefined;
    auth = decodeRegistryAuth(request.headers['x-registry-auth']);
  } catch (err) {
    stream.fail(err);
    return reply;
  }
  const abort = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) abort.abort();
  });
  try {
    await pullWithProgress(ctx, ref, platform, auth, (m) => stream.write(m), abort.signal);
    stream.end();
  } catch (err) {
    stream.fail(err);
  }
  return reply;
}

/** Pull for a build step (FROM, COPY --from): progress goes into the build output. */
export async function pullForBuild(
  ctx: EngineContext,
  name: string,
  platform: Platform | undefined,
  emit: Emit,
  registryConfig: string | string[] | undefined,
): Promise<PullOutcome> {
  const ref = withDefaultTag(parseReference(name));
  return pullWithProgress(ctx, ref, platform, registryConfigAuth(registryConfig, ref.domain), emit);
}

/** POST /images/create belongs to create.ts, which calls handlePull; nothing to register here. */
export function registerPullRoutes(_app: FastifyInstance, _ctx: EngineContext): void {}

export type { EngineRegistry };
