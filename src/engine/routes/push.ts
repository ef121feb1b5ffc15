import type { FastifyReply, FastifyRequest } from 'fastify';
import { StowageError, isStowageError } from '../../errors.js';
import type { Digest } from '../../oci/digest.js';
import { type ImageReference, familiarName, familiarString, isValidTag, parseReference, repository } from '../../oci/reference.js';
import { registryErrorDetails } from '../../registry/client.js';
import { shortId } from '../../oci/digest.js';
import { type PushProgressEvent, pushImage } from '../../registry/push.js';
import type { EngineContext } from '../context.js';
import { strParam } from '../params.js';
import { progressMessage, statusMessage } from '../jsonprogress.js';
import { type RegistryAuth, decodeRegistryAuth, registryClientFor } from '../registry-auth.js';
import { openJsonStream } from '../stream.js';
import { loadBaseImage } from './build.js';
import { clientGone } from './pull.js';

type Emit = (msg: Record<string, unknown>) => void;

const CONCURRENT_UPLOADS = 5;

/** dockerd's wording for push failures; `name` is the familiar reference being pushed. */
function translatePushError(err: unknown, name: string): StowageError {
  const refused = registryErrorDetails(err);
  if (refused) {
    if (refused.status === 401) return new StowageError('UNAUTHORIZED', `unauthorized: ${refused.registryMessage ?? 'authentication required'}`);
    if (refused.status === 403) return new StowageError('DENIED', `denied: ${refused.registryMessage ?? 'requested access to the resource is denied'}`);
    return new StowageError('REGISTRY_ERROR', (err as Error).message);
  }
  if (isStowageError(err, 'PLATFORM_NOT_FOUND')) {
    return new StowageError('CONFLICT', `cannot push ${name}: only some platforms of this multi-platform image are present locally`);
  }
  if (isStowageError(err)) return err;
  return new StowageError('REGISTRY_ERROR', (err as Error)?.message ?? String(err));
}

/** dockerd names pushed layers by their diff ID: short blob id -> short diff id, for every local image under `target`. */
async function layerNames(ctx: EngineContext, target: Digest): Promise<Map<string, string>> {
  const names = new Map<string, string>();
  const index = ctx.images.getIndex(target);
  for (const manifest of index ? index.children.map((c) => c.digest) : [target]) {
    const image = await loadBaseImage(ctx, manifest);
    image?.layers.forEach((l, i) => {
      const diffId = image.config.rootfs.diff_ids[i];
      if (diffId) names.set(shortId(l.digest), shortId(diffId));
    });
  }
  return names;
}

/** Maps pushImage's progress events to dockerd's messages (layers named by diff ID, a progress bar on "Pushing"). */
function dockerPushProgress(emit: Emit, names: Map<string, string>): (e: PushProgressEvent) => void {
  const started = new Map<string, number>();
  return (e) => {
    const id = names.get(e.id) ?? e.id;
    if (e.status === 'Pushing') {
      if (!started.has(id)) started.set(id, Date.now() / 1000);
      emit(progressMessage('Pushing', id, e.current ?? 0, e.total ?? 0, started.get(id)));
    } else if (e.status === 'Mounted from') {
      emit(statusMessage(`Mounted from ${e.from ?? ''}`, id));
    } else {
      emit(statusMessage(e.status, id));
    }
  };
}

/** POST /images/{name}/push (routed by images.ts, whose wildcard route takes names of any depth). */
export async function handlePush(request: FastifyRequest, reply: FastifyReply, ctx: EngineContext, name: string): Promise<FastifyReply> {
  const stream = openJsonStream(reply);
  const tagParam = strParam(request.query as Record<string, unknown>, 'tag');
  let ref: ImageReference;
  let auth: RegistryAuth | undefined;
  try {
    ref = parseReference(name);
    if (tagParam) {
      if (!isValidTag(tagParam)) throw new StowageError('INVALID_REFERENCE', 'invalid reference format');
      ref = { domain: ref.domain, path: ref.path, tag: tagParam };
    }
    auth = decodeRegistryAuth(request.headers['x-registry-auth']);
  } catch (err) {
    stream.error(err);
    return reply;
  }
  const repo = repository(ref);
  let tags: Array<{ tag: string; target: Digest }>;
  if (ref.tag !== undefined) {
    const target = ctx.images.resolveTag(`${repo}:${ref.tag}`);
    if (!target) {
      // dockerd: no tag of the repository at all, or not this one.
      const anyTag = ctx.images.listTags().some((t) => t.reference.startsWith(`${repo}:`));
      stream.error(
        new StowageError(
          'IMAGE_NOT_FOUND',
          anyTag
            ? `tag does not exist: ${familiarString({ domain: ref.domain, path: ref.path, tag: ref.tag })}`
            : `An image does not exist locally with the tag: ${familiarName(ref)}`,
        ),
      );
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
      stream.error(new StowageError('IMAGE_NOT_FOUND', `An image does not exist locally with the tag: ${familiarName(ref)}`));
      return reply;
    }
  }
  const signal = clientGone(reply, 'push');
  let current = familiarName(ref);
  try {
    const client = registryClientFor(ctx, ref.domain, auth);
    stream.write({ status: `The push refers to repository [${familiarName(ref)}]` });
    for (const { tag, target } of tags) {
      current = familiarString({ domain: ref.domain, path: ref.path, tag });
      const onProgress = dockerPushProgress((m) => stream.write(m), await layerNames(ctx, target));
      const pushed = await pushImage(client, ctx, target, ref.path, tag, { concurrency: CONCURRENT_UPLOADS, signal, onProgress });
      ctx.images.addRepoDigest({ repository: repo, digest: pushed.digest, manifestDigest: pushed.manifests[0] ?? target });
      stream.write({ status: `${tag}: digest: ${pushed.digest} size: ${pushed.size}` });
      stream.write({ progressDetail: {}, aux: { Tag: tag, Digest: pushed.digest, Size: pushed.size } });
    }
    stream.end();
  } catch (err) {
    stream.error(translatePushError(err, current));
  }
  return reply;
}
