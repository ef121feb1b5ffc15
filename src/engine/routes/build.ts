import { randomUUID } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { StowageError } from '../../errors.js';
import { type Digest, shortId } from '../../oci/digest.js';
import { type Descriptor, parseImageConfig, parseManifestBytes } from '../../oci/manifest.js';
import { type Platform, defaultPlatform, parsePlatform } from '../../oci/platform.js';
import { familiarString, formatReference, parseReference, withDefaultTag, type ImageReference } from '../../oci/reference.js';
import { type BaseImage, type BuildRequest, Builder, type StepImage } from '../build/builder.js';
import { BuildCache, type NewCacheEntry } from '../build/cache.js';
import type { CacheSource } from '../build/step-cache.js';
import { applyDockerignore, loadContext, readContextFile } from '../build/context.js';
import { parseDockerfile } from '../build/dockerfile.js';
import { parseDuration } from '../build/instructions.js';
import type { EngineContext } from '../context.js';
import { DEFAULT_FETCH_POLICY, fetchUnderPolicy } from '../fetch-policy.js';
import { boolParam, listParam, strParam } from '../params.js';
import { platformRecord } from '../resolve.js';
import { openJsonStream, sendError } from '../stream.js';
import { recordImage } from '../store-image.js';
import type { Lease } from '../../store/types.js';
import { pullForBuild } from './pull.js';

function jsonMap(q: Record<string, unknown>, key: string, what: string): Record<string, string | null> {
  const s = strParam(q, key);
  if (s === undefined || s === '') return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(s);
  } catch (err) {
    throw new StowageError('BAD_REQUEST', `error reading ${what}: ${(err as Error).message}`);
  }
  if (parsed === null) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) throw new StowageError('BAD_REQUEST', `error reading ${what}: expected a JSON object`);
  const out: Record<string, string | null> = {};
  for (const [k, val] of Object.entries(parsed as Record<string, unknown>)) {
    if (val !== null && typeof val !== 'string') throw new StowageError('BAD_REQUEST', `error reading ${what}: value of ${k} is not a string`);
    out[k] = val;
  }
  return out;
}

/** Finds an image in the store by reference or ID, for one platform; its blobs go into `lease` (see loadBaseImage). */
export async function findLocalImage(ctx: EngineContext, name: string, platform: Platform | undefined, lease?: Lease): Promise<BaseImage | undefined> {
  const want = platform ?? defaultPlatform();
  let target: Digest | undefined;
  const idLike = /^(sha256:)?[a-f0-9]{12,64}$/.test(name);
  let ref: ImageReference | undefined;
  try {
    ref = parseReference(name);
  } catch (err) {
    if (!idLike) throw err;
  }
  if (ref) {
    if (ref.digest) {
      target = ctx.images.getImage(ref.digest) || ctx.images.getIndex(ref.digest) ? ref.digest : undefined;
    } else {
      target = ctx.images.resolveTag(formatReference(withDefaultTag(ref)));
    }
  }
  if (!target && idLike) {
    const hex = name.replace(/^sha256:/, '');
    const candidates = ctx.images.listImages().filter((r) => r.configDigest.slice(7).startsWith(hex));
    const ids = new Set(candidates.map((c) => c.configDigest));
    if (ids.size === 1) target = candidates[0]!.manifestDigest;
  }
  if (!target) return undefined;
  const record = platformRecord(ctx.images, target, want);
  return record ? loadBaseImage(ctx, record.manifestDigest, lease) : undefined;
}

/**
 * Reads an image's manifest and config. With `lease`, the image's blobs are leased in the same step as its
 * record is read, so deleting the image meanwhile (docker rmi, prune) leaves them for the caller.
 */
export async function loadBaseImage(ctx: EngineContext, manifestDigest: Digest, lease?: Lease): Promise<BaseImage | undefined> {
  const record = ctx.images.getImage(manifestDigest);
  if (!record) return undefined;
  if (lease) for (const d of [record.manifestDigest, record.configDigest, ...record.layers]) lease.add(d);
  const parsed = parseManifestBytes(await ctx.store.readBytes(record.manifestDigest), record.manifestMediaType);
  if (parsed.kind !== 'manifest') return undefined;
  const config = parseImageConfig(await ctx.store.readBytes(record.configDigest));
  const layers: Descriptor[] = parsed.manifest.layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size }));
  return { id: record.configDigest, manifestDigest: record.manifestDigest, manifestMediaType: parsed.mediaType, config, layers };
}

/** What the query string says: the build request but for the Dockerfile and context (read from the body), plus the tags. */
interface BuildQuery extends Omit<BuildRequest, 'dockerfile' | 'context' | 'cacheFrom'> {
  tags: ImageReference[];
  /** `cachefrom`: names of local images to trust as cache sources (missing ones are skipped, as dockerd does). */
  cacheFromNames: string[];
}

/** `cachefrom`: a JSON array of image names. */
function cacheFromParam(q: Record<string, unknown>): string[] {
  const s = strParam(q, 'cachefrom');
  if (s === undefined || s === '') return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(s);
  } catch (err) {
    throw new StowageError('BAD_REQUEST', `error reading cache-from: ${(err as Error).message}`);
  }
  if (parsed === null) return [];
  if (!Array.isArray(parsed) || !parsed.every((x) => typeof x === 'string')) throw new StowageError('BAD_REQUEST', 'error reading cache-from: expected a JSON array of strings');
  return parsed as string[];
}

function parseBuildQuery(q: Record<string, unknown>): BuildQuery {
  if (strParam(q, 'remote')) throw new StowageError('BAD_REQUEST', 'remote build contexts are not supported by this Stowage agent: send the context as a tar');
  if (strParam(q, 'version') === '2') throw new StowageError('BAD_REQUEST', 'BuildKit is not supported by this Stowage agent: use the classic builder (DOCKER_BUILDKIT=0)');
  const tags: ImageReference[] = [];
  for (const t of listParam(q, 't').filter((t) => t !== '')) {
    const ref = parseReference(t);
    if (ref.digest) throw new StowageError('BAD_REQUEST', 'build tag cannot contain a digest');
    tags.push(withDefaultTag(ref));
  }
  const labelsRaw = jsonMap(q, 'labels', 'labels');
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(labelsRaw)) labels[k] = v ?? '';
  const platformRaw = strParam(q, 'platform');
  return {
    tags,
    dockerfileName: strParam(q, 'dockerfile') || 'Dockerfile',
    buildArgs: jsonMap(q, 'buildargs', 'build args'),
    labels,
    target: strParam(q, 'target') || undefined,
    quiet: boolParam(q, 'q'),
    pull: boolParam(q, 'pull'),
    platform: platformRaw ? parsePlatform(platformRaw) : undefined,
    noCache: boolParam(q, 'nocache'),
    cacheFromNames: cacheFromParam(q),
  };
}

async function handleBuild(request: FastifyRequest, reply: FastifyReply, ctx: EngineContext): Promise<FastifyReply | void> {
  let query: BuildQuery;
  try {
    query = parseBuildQuery(request.query as Record<string, unknown>);
  } catch (err) {
    return sendError(reply, err);
  }
  const cache = BuildCache.for(ctx.workDir);
  const dir = join(cache.buildsDir, randomUUID());
  cache.active.add(dir);
  const abort = new AbortController();
  request.raw.once('close', () => {
    if (!request.raw.complete) abort.abort();
  });
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) abort.abort();
  });
  try {
    await mkdir(dir, { recursive: true });
    // Everything up to the first output byte answers with an HTTP status, like dockerd.
    let dockerfileText: string;
    let context;
    let dockerfile;
    try {
      context = await loadContext(request.raw, join(dir, 'context'));
      const df = await readContextFile(context, query.dockerfileName.replace(/^\.?\//, ''));
      if (!df) throw new StowageError('BAD_REQUEST', `Cannot locate specified Dockerfile: ${query.dockerfileName}`);
      dockerfileText = df.toString('utf8');
      const ignore = await readContextFile(context, '.dockerignore');
      if (ignore) await applyDockerignore(context, ignore.toString('utf8'));
      dockerfile = parseDockerfile(dockerfileText);
    } catch (err) {
      return sendError(reply, err);
    }

    const stream = openJsonStream(reply);
    const out = {
      stream: (text: string) => stream.write({ stream: text }),
      message: (obj: Record<string, unknown>) => stream.write(obj),
    };
    // Base images' blobs and the layers, config and manifest the build writes, until the image is recorded.
    const lease = ctx.store.lease();
    try {
      const cacheFrom: CacheSource[] = [];
      for (const name of query.cacheFromNames) {
        const img = await findLocalImage(ctx, name, query.platform, lease).catch(() => undefined);
        if (img) cacheFrom.push({ config: img.config, layers: img.layers });
      }
      const builder = new Builder(
        { ...query, dockerfile, context, cacheFrom },
        {
          stepCache: await cache.steps(),
          download: (url, signal) => fetchUnderPolicy(ctx.fetch ?? DEFAULT_FETCH_POLICY, url, signal),
          store: ctx.store,
          images: ctx.images,
          lease,
          workDir: dir,
          signal: abort.signal,
          defaultPlatform: defaultPlatform(),
          out,
          resolveImage: async (name, opts) => {
            // With pull, a bad name is left for the pull to report.
            const local = opts.pull
              ? await findLocalImage(ctx, name, opts.platform, lease).catch(() => undefined)
              : await findLocalImage(ctx, name, opts.platform, lease);
            if (local && !opts.pull) return local;
            const pulled = await pullForBuild(ctx, name, opts.platform, (msg) => (query.quiet ? undefined : stream.write(msg)), request.headers['x-registry-config'], lease);
            const base = await loadBaseImage(ctx, pulled.manifestDigest, lease);
            if (!base) throw new StowageError('IMAGE_NOT_FOUND', `pulled ${name} but cannot read it back`);
            return base;
          },
        },
      );
      const result = await builder.run();
      if (result.unusedBuildArgs.length > 0 && !query.quiet) {
        stream.write({ stream: `[Warning] One or more build-args [${result.unusedBuildArgs.join(' ')}] were not consumed\n` });
      }
      // The image and its tags appear together.
      recordImage(ctx.images, result.record, query.tags);
      const imageId = result.record.configDigest;
      const ledger: NewCacheEntry[] = [];
      if (result.intermediateBlobs.length > 0) {
        ledger.push({ type: 'intermediate', id: `stage:${shortId(imageId)}:${randomUUID().slice(0, 8)}`, blobs: result.intermediateBlobs });
      }
      for (const step of result.steps) ledger.push(await stepEntry(ctx, step));
      await cache.record(...ledger);
      stream.write({ id: 'moby.image.id', aux: { ID: imageId } });
      if (!query.quiet) stream.write({ stream: `Successfully built ${shortId(imageId)}\n` });
      if (!query.quiet) for (const tag of query.tags) stream.write({ stream: `Successfully tagged ${familiarString(tag)}\n` });
      // With -q the image ID is the whole output, as a stream line.
      if (query.quiet) stream.write({ stream: `${imageId}\n` });
      stream.end();
    } catch (err) {
      stream.error(err);
    } finally {
      lease.release();
    }
  } finally {
    cache.active.delete(dir);
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** A step's ledger entry: its image and the blobs it stored (config, manifest, its layer). */
async function stepEntry(ctx: EngineContext, step: StepImage): Promise<NewCacheEntry> {
  const blobs: Array<{ digest: Digest; size: number }> = [];
  for (const d of [step.record.configDigest, step.record.manifestDigest]) {
    const info = await ctx.store.stat(d);
    if (info) blobs.push(info);
  }
  if (step.layer) blobs.push({ digest: step.layer.descriptor.digest, size: step.layer.descriptor.size });
  return {
    type: 'step',
    id: `step:${step.record.configDigest}`,
    parent: step.parent,
    createdBy: step.createdBy,
    created: step.created,
    image: step.record,
    layer: step.layer,
    blobs,
  };
}

async function handlePrune(request: FastifyRequest, reply: FastifyReply, ctx: EngineContext): Promise<FastifyReply> {
  const q = request.query as Record<string, unknown>;
  let olderThanMs: number | undefined;
  const filtersRaw = strParam(q, 'filters');
  if (filtersRaw) {
    let filters: unknown;
    try {
      filters = JSON.parse(filtersRaw);
    } catch (err) {
      return sendError(reply, new StowageError('BAD_REQUEST', `invalid filter: ${(err as Error).message}`));
    }
    if (typeof filters !== 'object' || filters === null || Array.isArray(filters)) {
      return sendError(reply, new StowageError('BAD_REQUEST', 'invalid filter: expected a JSON object'));
    }
    for (const [key, value] of Object.entries(filters as Record<string, unknown>)) {
      const values = Array.isArray(value) ? value : typeof value === 'object' && value !== null ? Object.keys(value) : [value];
      if (key === 'until') {
        const v = String(values[0] ?? '');
        try {
          olderThanMs = /^\d+$/.test(v) ? Date.now() - Number(v) * 1000 : parseDuration(v) / 1e6;
        } catch {
          return sendError(reply, new StowageError('BAD_REQUEST', `invalid filter 'until=${v}'`));
        }
      } else if (!['id', 'parent', 'type', 'description', 'inuse', 'shared', 'private'].includes(key)) {
        return sendError(reply, new StowageError('BAD_REQUEST', `invalid filter '${key}'`));
      }
    }
  }
  const keep = strParam(q, 'keep-storage');
  if (keep !== undefined && keep !== '' && !/^\d+$/.test(keep)) {
    return sendError(reply, new StowageError('BAD_REQUEST', `invalid keep-storage value: ${keep}`));
  }
  try {
    const result = await BuildCache.for(ctx.workDir).prune(ctx.store, ctx.images, { all: boolParam(q, 'all'), olderThanMs });
    return reply.code(200).send(result);
  } catch (err) {
    return sendError(reply, err);
  }
}

/** POST /build (classic builder) and POST /build/prune. */
export function registerBuildRoutes(app: FastifyInstance, ctx: EngineContext): void {
  void app.register(async (child) => {
    // The body is the raw build context: read it from the request stream, unparsed and unbounded here
    // (the context loader bounds it).
    child.removeAllContentTypeParsers();
    child.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
    child.post('/build', (request, reply) => handleBuild(request, reply, ctx));
    child.post('/build/prune', (request, reply) => handlePrune(request, reply, ctx));
  });
}

