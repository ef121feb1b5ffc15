import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { StowageError, isStowageError } from '../../errors.js';
import type { Digest } from '../../oci/digest.js';
import { type Descriptor, parseImageConfig, parseManifestBytes } from '../../oci/manifest.js';
import { type ImageReference, familiarName, familiarString, parseReference, repository } from '../../oci/reference.js';
import type { EngineContext } from '../context.js';
import { ProgressThrottle, progressMessage } from '../jsonprogress.js';
import { type RegistryAuth, decodeRegistryAuth, registryClientFor } from '../registry-auth.js';
import { type EngineRegistry, RegistryHttpError } from '../remote.js';
import { lazyJsonStream } from './json-stream.js';

type Emit = (msg: Record<string, unknown>) => void;

const CONCURRENT_UPLOADS = 5;

function shortId(d: string): string {
  return d.replace(/^sha256:/, '').slice(0, 12);
}

function one(v: unknown): string | undefined {
  if (Array.isArray(v)) v = v[v.length - 1];
  return typeof v === 'string' ? v : undefined;
}

/** dockerd's wording for push failures. */
function translatePushError(err: unknown): StowageError {
  if (err instanceof RegistryHttpError) {
    if (err.http.status === 401) return new StowageError('UNAUTHORIZED', `unauthorized: ${err.http.registryMessage ?? 'authentication required'}`);
    if (err.http.status === 403) return new StowageError('DENIED', `denied: ${err.http.registryMessage ?? 'requested access to the resource is denied'}`);
    return new StowageError('REGISTRY_ERROR', err.message);
  }
  if (isStowageError(err)) return err;
  const e = err as NodeJS.ErrnoException;
  return new StowageError('REGISTRY_ERROR', e?.message ?? String(err));
}

interface PushItem {
  manifestDigest: Digest;
  manifestMediaType: string;
  manifestBytes: Buffer;
  config: Descriptor;
  layers: Array<{ desc: Descriptor; diffId: string }>;
}

async function loadPushItem(ctx: EngineContext, manifestDigest: Digest): Promise<PushItem> {
  const record = ctx.images.getImage(manifestDigest);
  if (!record) throw new StowageError('IMAGE_NOT_FOUND', `image ${manifestDigest} is not present`);
  const bytes = await ctx.store.readBytes(manifestDigest);
  const parsed = parseManifestBytes(bytes, record.manifestMediaType);
  if (parsed.kind !== 'manifest') throw new StowageError('INVALID_MANIFEST', `${manifestDigest} is not an image manifest`);
  const config = parseImageConfig(await ctx.store.readBytes(parsed.manifest.config.digest));
  const diffIds = config.rootfs.diff_ids;
  return {
    manifestDigest,
    manifestMediaType: parsed.mediaType,
    manifestBytes: bytes,
    config: parsed.manifest.config,
    layers: parsed.manifest.layers.map((desc, i) => ({ desc, diffId: diffIds[i] ?? desc.digest })),
  };
}

/** Uploads one image's blobs with Docker's per-layer messages, then its manifest (by digest when `tag` is undefined). */
async function pushItem(ctx: EngineContext, client: EngineRegistry, repo: string, item: PushItem, emit: Emit, signal: AbortSignal): Promise<void> {
  const throttle = new ProgressThrottle();
  // dockerd lists the top layer first.
  const layers = [...item.layers].reverse();
  const seen = new Set<string>();
  const unique = layers.filter((l) => (seen.has(l.desc.digest) ? false : (seen.add(l.desc.digest), true)));
  for (const l of unique) emit({ status: 'Preparing', progressDetail: {}, id: shortId(l.diffId) });
  if (unique.length > CONCURRENT_UPLOADS) {
    for (const l of unique.slice(CONCURRENT_UPLOADS)) emit({ status: 'Waiting', progressDetail: {}, id: shortId(l.diffId) });
  }
  const upload = async (desc: Descriptor, id: string | undefined) => {
    if (await client.hasBlob(repo, desc.digest, true)) {
      if (id) emit({ status: 'Layer already exists', progressDetail: {}, id });
      return;
    }
    const start = Date.now() / 1000;
    let current = 0;
    const source = await ctx.store.createReadStream(desc.digest);
    async function* counted(): AsyncGenerator<Uint8Array> {
      for await (const chunk of source) {
        if (signal.aborted) throw new StowageError('CONFLICT', 'push cancelled: the client went away');
        current += (chunk as Buffer).byteLength;
        if (id && throttle.shouldSend(id, current >= desc.size)) emit(progressMessage('Pushing', id, current, desc.size, start));
        yield chunk as Buffer;
      }
    }
    await client.pushBlob(repo, desc.digest, desc.size, counted());
    if (id) emit({ status: 'Pushed', progressDetail: {}, id });
  };
  let next = 0;
  const workers = Array.from({ length: Math.min(CONCURRENT_UPLOADS, unique.length) }, async () => {
    while (next < unique.length) {
      const l = unique[next++]!;
      await upload(l.desc, shortId(l.diffId));
    }
  });
  await Promise.all(workers);
  await upload(item.config, undefined);
}

async function handlePush(request: FastifyRequest, reply: FastifyReply, ctx: EngineContext): Promise<FastifyReply> {
  const stream = lazyJsonStream(reply);
  const name = (request.params as { name: string }).name;
  const tagParam = one((request.query as Record<string, unknown>)['tag']);
  let ref: ImageReference;
  let auth: RegistryAuth | undefined;
  try {
    ref = parseReference(name);
    if (tagParam) {
      if (!/^[\w][\w.-]{0,127}$/.test(tagParam)) throw new StowageError('INVALID_REFERENCE', 'invalid reference format');
      ref = { domain: ref.domain, path: ref.path, tag: tagParam };
    }
    auth = decodeRegistryAuth(request.headers['x-registry-auth']);
  } catch (err) {
    stream.fail(err);
    return reply;
  }
  const repo = repository(ref);
  let tags: Array<{ tag: string; target: Digest }>;
  if (ref.tag !== undefined) {
    const target = ctx.images.resolveTag(`${repo}:${ref.tag}`);
    if (!target) {
      stream.fail(new StowageError('IMAGE_NOT_FOUND', `No such image: ${familiarString({ domain: ref.domain, path: ref.path, tag: ref.tag })}`));
      return reply;
    }
    tags = [{ tag: ref.tag, target }];
  } else {
    tags = ctx.images
      .listTags()
      .filter((t) => t.reference.startsWith(`${repo}:`) && !t.reference.includes('@'))
      .map((t) => ({ tag: t.reference.slice(repo.length + 1), target: t.target }))
      .sort((a, b) => (a.tag < b.tag ? -1 : 1));
    if (tags.length === 0) {
      stream.fail(new StowageError('IMAGE_NOT_FOUND', `An image does not exist locally with the tag: ${familiarName(ref)}`));
      return reply;
    }
  }
  const abort = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) abort.abort();
  });
  try {
    const client = registryClientFor(ctx, ref.domain, auth);
    stream.write({ status: `The push refers to repository [${familiarName(ref)}]` });
    for (const { tag, target } of tags) {
      let manifestBytes: Buffer;
      let mediaType: string;
      const index = ctx.images.getIndex(target);
      if (index) {
        const missing = index.children.filter((c) => !c.present || !ctx.images.getImage(c.digest));
        if (missing.length > 0) {
          throw new StowageError(
            'CONFLICT',
            `cannot push ${familiarString({ domain: ref.domain, path: ref.path, tag })}: only some platforms of this multi-platform image are present locally`,
          );
        }
        for (const c of index.children) {
          const item = await loadPushItem(ctx, c.digest);
          await pushItem(ctx, client, ref.path, item, (m) => stream.write(m), abort.signal);
          await client.putManifest(ref.path, c.digest, item.manifestBytes, item.manifestMediaType);
        }
        manifestBytes = await ctx.store.readBytes(target);
        mediaType = index.mediaType;
      } else {
        const item = await loadPushItem(ctx, target);
        await pushItem(ctx, client, ref.path, item, (m) => stream.write(m), abort.signal);
        manifestBytes = item.manifestBytes;
        mediaType = item.manifestMediaType;
      }
      const digest = await client.putManifest(ref.path, tag, manifestBytes, mediaType);
      const manifestDigest = index ? (index.children[0]?.digest ?? target) : target;
      ctx.images.addRepoDigest({ repository: repo, digest, manifestDigest });
      stream.write({ status: `${tag}: digest: ${digest} size: ${manifestBytes.length}` });
      stream.write({ progressDetail: {}, aux: { Tag: tag, Digest: digest, Size: manifestBytes.length } });
    }
    stream.end();
  } catch (err) {
    stream.fail(translatePushError(err));
  }
  return reply;
}

/** Repository names have at most this many path components after the registry host. */
const MAX_NAME_SEGMENTS = 8;

/**
 * POST /images/{name}/push. The name may contain slashes (host:port/team/app), so one parametric
 * route per depth is registered; they never collide with other /images/… routes, and parametric
 * routes win over any wildcard route another module may register.
 */
export function registerPushRoutes(app: FastifyInstance, ctx: EngineContext): void {
  for (let depth = 1; depth <= MAX_NAME_SEGMENTS; depth++) {
    const params = Array.from({ length: depth }, (_, i) => `:n${i}`);
    app.post(`/images/${params.join('/')}/push`, (request, reply) => {
      const p = request.params as Record<string, string>;
      const name = Array.from({ length: depth }, (_, i) => p[`n${i}`] ?? '').join('/');
      (request.params as Record<string, string>)['name'] = name;
      return handlePush(request, reply, ctx);
    });
  }
}

export { handlePush };
