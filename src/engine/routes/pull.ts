import type { FastifyReply, FastifyRequest } from 'fastify';
import { StowageError, isStowageError } from '../../errors.js';
import { type Digest, isDigest } from '../../oci/digest.js';
import { type Platform, defaultPlatform, formatPlatform, parsePlatform } from '../../oci/platform.js';
import { type ImageReference, familiarName, familiarString, formatReference, isValidTag, parseReference, withDefaultTag } from '../../oci/reference.js';
import { registryErrorDetails } from '../../registry/client.js';
import { type PullProgressEvent, pullImage } from '../../registry/pull.js';
import type { Lease } from '../../store/types.js';
import type { EngineContext } from '../context.js';
import { strParam } from '../params.js';
import { progressMessage, statusMessage } from '../jsonprogress.js';
import { type RegistryAuth, decodeRegistryAuth, registryClientFor, registryConfigAuth, registryErrorText } from '../registry-auth.js';
import { openJsonStream } from '../stream.js';

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

/** Words a pull failure the way dockerd does (distribution.TranslatePullError). */
export function translatePullError(err: unknown, ref: ImageReference, platform?: Platform): StowageError {
  const refused = registryErrorDetails(err);
  if (refused) {
    const rc = refused.registryCode;
    const text = registryErrorText(refused);
    if (rc === 'MANIFEST_UNKNOWN' || (refused.status === 404 && rc === undefined)) {
      return new StowageError('MANIFEST_NOT_FOUND', `manifest for ${familiarString(ref)} not found: ${text}`, { status: 404 });
    }
    if (rc === 'NAME_UNKNOWN') {
      return new StowageError('IMAGE_NOT_FOUND', `repository ${familiarName(ref)} not found: ${text}`, { status: 404 });
    }
    if (rc === 'DENIED' || rc === 'UNAUTHORIZED' || refused.status === 401 || refused.status === 403) {
      return new StowageError('DENIED', `pull access denied for ${familiarName(ref)}, repository does not exist or may require 'docker login': ${text}`, {
        status: 404,
      });
    }
    return new StowageError('REGISTRY_ERROR', (err as Error).message, { status: 500 });
  }
  if (isStowageError(err, 'PLATFORM_NOT_FOUND')) {
    return new StowageError('PLATFORM_NOT_FOUND', `no matching manifest for ${formatPlatform(platform ?? defaultPlatform())} in the manifest list entries`, { status: 404 });
  }
  if (isStowageError(err)) return err;
  return new StowageError('INTERNAL', (err as Error)?.message ?? String(err));
}

/**
 * Maps pullImage's progress events to dockerd's messages: "Verifying Checksum" before "Download
 * complete", a progress bar on "Downloading", and "Extracting" + "Pull complete" released in layer
 * order, as Docker shows them.
 */
function dockerPullProgress(emit: Emit): (e: PullProgressEvent) => void {
  const started = new Map<string, number>();
  const sizes = new Map<string, number>();
  const order: string[] = [];
  const complete = new Set<string>();
  let released = 0;
  return (e) => {
    switch (e.status) {
      case 'Pulling fs layer':
        order.push(e.id);
        sizes.set(e.id, e.total ?? 0);
        emit(statusMessage(e.status, e.id));
        return;
      case 'Downloading': {
        if (!started.has(e.id)) started.set(e.id, Date.now() / 1000);
        emit(progressMessage('Downloading', e.id, e.current ?? 0, e.total ?? 0, started.get(e.id)));
        return;
      }
      case 'Download complete':
        emit(statusMessage('Verifying Checksum', e.id));
        emit(statusMessage(e.status, e.id));
        return;
      case 'Pull complete': {
        if (!order.includes(e.id)) order.push(e.id);
        complete.add(e.id);
        while (released < order.length && complete.has(order[released]!)) {
          const id = order[released++]!;
          const size = sizes.get(id) ?? 0;
          emit(progressMessage('Extracting', id, size, size));
          emit(statusMessage('Pull complete', id));
        }
        return;
      }
      default:
        emit(statusMessage(e.status, e.id));
    }
  };
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
  lease?: Lease,
): Promise<PullOutcome> {
  const tagOrDigest = ref.digest ?? ref.tag ?? 'latest';
  const want = platform ?? defaultPlatform();
  const previous = ref.tag !== undefined ? ctx.images.resolveTag(formatReference(ref)) : undefined;
  try {
    const client = registryClientFor(ctx, ref.domain, auth);
    const pulled = await pullImage(client, ref, ctx, {
      platform: want,
      onManifest: () => emit({ status: `Pulling from ${ref.path}`, id: tagOrDigest }),
      onProgress: dockerPullProgress(emit),
      signal,
      lease,
    });
    const target = pulled.indexDigest ?? pulled.manifestDigest;
    // An explicit --platform makes the tag name that platform's image, as dockerd's image store does: after
    // `docker pull --platform linux/arm64 X`, X is the arm64 image even when X's amd64 image was here.
    const tagTarget = platform !== undefined && ref.tag !== undefined && pulled.indexDigest !== undefined ? pulled.manifestDigest : target;
    if (tagTarget !== target) ctx.images.tag(formatReference(ref), tagTarget);
    emit({ status: `Digest: ${target}` });
    const upToDate = !pulled.downloaded && (ref.tag === undefined || previous === tagTarget);
    emit({ status: `Status: ${upToDate ? 'Image is up to date for' : 'Downloaded newer image for'} ${familiarString(ref)}` });
    return { reference: formatReference(ref), target, manifestDigest: pulled.manifestDigest, downloaded: !upToDate };
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
    } else if (isValidTag(tag)) {
      ref = { domain: ref.domain, path: ref.path, tag };
    } else {
      throw new StowageError('INVALID_REFERENCE', 'invalid reference format');
    }
  }
  return withDefaultTag(ref);
}

/** An AbortSignal that fires when the client goes away before the answer is complete. */
export function clientGone(reply: FastifyReply, what: string): AbortSignal {
  const abort = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) abort.abort(new StowageError('CONFLICT', `${what} cancelled: the client went away`));
  });
  return abort.signal;
}

/** POST /images/create?fromImage=…: called by create.ts. */
export async function handlePull(request: FastifyRequest, reply: FastifyReply, ctx: EngineContext): Promise<FastifyReply | void> {
  const q = request.query as Record<string, unknown>;
  const stream = openJsonStream(reply);
  let ref: ImageReference;
  let platform: Platform | undefined;
  let auth: RegistryAuth | undefined;
  let allTags = false;
  try {
    const fromImage = strParam(q, 'fromImage') ?? '';
    const tag = strParam(q, 'tag');
    ref = pullReference(fromImage, tag);
    // A name with no tag (and no tag parameter) is every tag of the repository, as dockerd has it (`docker pull -a`).
    const named = parseReference(fromImage);
    allTags = named.tag === undefined && named.digest === undefined && (tag === undefined || tag === '');
    const p = strParam(q, 'platform');
    platform = p ? parsePlatform(p) : undefined;
    auth = decodeRegistryAuth(request.headers['x-registry-auth']);
  } catch (err) {
    stream.error(err);
    return reply;
  }
  try {
    const signal = clientGone(reply, 'pull');
    if (!allTags) await pullWithProgress(ctx, ref, platform, auth, (m) => stream.write(m), signal);
    else {
      const tags: string[] = [];
      try {
        for await (const t of registryClientFor(ctx, ref.domain, auth).tags(ref.path)) if (isValidTag(t)) tags.push(t);
      } catch (err) {
        throw translatePullError(err, ref, platform);
      }
      for (const t of tags.sort()) await pullWithProgress(ctx, { domain: ref.domain, path: ref.path, tag: t }, platform, auth, (m) => stream.write(m), signal);
    }
    stream.end();
  } catch (err) {
    stream.error(err);
  }
  return reply;
}

/** Pull for a build step (FROM, COPY --from): progress goes into the build output; the blobs go into the build's lease. */
export async function pullForBuild(
  ctx: EngineContext,
  name: string,
  platform: Platform | undefined,
  emit: Emit,
  registryConfig: string | string[] | undefined,
  lease: Lease,
): Promise<PullOutcome> {
  const ref = withDefaultTag(parseReference(name));
  return pullWithProgress(ctx, ref, platform, registryConfigAuth(registryConfig, ref.domain), emit, undefined, lease);
}
