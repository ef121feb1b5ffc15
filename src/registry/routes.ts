import { type Readable, Transform, pipeline } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { isStowageError, storageFullOr } from '../errors.js';
import { type Digest, isDigest } from '../oci/digest.js';
import { parseManifestBytes } from '../oci/manifest.js';
import { MAX_MANIFEST_BYTES, MediaType } from '../oci/media-types.js';
import { type ImageReference, formatReference, isValidTag, parseReference } from '../oci/reference.js';
import { BlobFileStream } from '../store/blob-file-stream.js';
import type { LiveBlobReader } from '../store/live-blobs.js';
import type { ContentStoreApi, ImageIndexApi, TagRecord } from '../store/types.js';
import { type DistributionCode, STOWAGE_ERROR_HEADER, STOWAGE_MESSAGE_HEADER, headerSafe, sendError } from './distribution-errors.js';
import { normalisedRepo } from './name-rule.js';
import { REPOSITORY_PATH_RE, isRepositoryPath } from './names.js';
import type { RegistryAuthorizer } from './peer-auth.js';
import { referrersIndex } from './referrers.js';
import { type WriteRoutesOptions, registerWriteRoutes, uploadStatus } from './upload-routes.js';
import { type UploadSessionOptions, UploadSessions } from './upload-sessions.js';
import { challengeScope, requiredAccess, v2Rest, v2Target } from './v2-path.js';

/**
 * The OCI distribution endpoint an agent serves to its peers (and to skopeo, crane, docker):
 *
 *   GET/HEAD /v2/                          API version check
 *   GET/HEAD /v2/<name>/manifests/<ref>    by tag or digest
 *   GET/HEAD /v2/<name>/blobs/<digest>     with Range (206 / 416), Accept-Ranges: bytes; a GET also serves a
 *                                          blob still arriving (store liveReader), as it arrives
 *   GET      /v2/_catalog                  ?n=&last= with Link pagination
 *   GET      /v2/<name>/tags/list          ?n=&last= with Link pagination
 *   GET      /v2/<name>/referrers/<digest> the manifests whose subject it is, as an OCI index; ?artifactType=
 *   POST/PUT/PATCH/DELETE anything         405 UNSUPPORTED, unless `authorize` is given:
 *
 * With `authorize`, every request needs it to say yes to the scope it needs (see requiredAccess in
 * v2-path.ts; else 401 with a challenge: Bearer pointing at the token service when `tokenService` is given,
 * Basic otherwise), and then, only then, writes are accepted: blob uploads, manifest PUTs and deletes
 * (upload-routes.ts). There is no anonymous write endpoint. The check and the handlers read the same
 * decoded path (v2-path.ts).
 *
 * Name rule. Local tags are fully normalised references ("docker.io/library/alpine:3",
 * "127.0.0.1:5000/x:1", "ghcr.io/org/app:2"); a request names a repository without a registry host. A tag
 * `<name>:<tag>` is resolved by trying, in order:
 *   1. the reference `<name>:<tag>` normalised as Docker does: "alpine" and "library/alpine" mean
 *      docker.io/library/alpine, "ghcr.io/org/app" means that registry's repository;
 *   2. any local tag `<tag>` whose repository path equals `<name>` on any registry, e.g. "x" finds
 *      "127.0.0.1:5000/x:1" (the agent's own host or any other); among several, the latest-updated wins.
 * The catalog lists each repository under the name that resolves back to it (rule 1 when the registry
 * host can be written in a name, else the bare path). Manifests and blobs by digest are content-addressed
 * and served whatever the name.
 */

export interface RegistryRoutesOptions {
  store: ContentStoreApi;
  images: ImageIndexApi;
  /**
   * Checks each request's Authorization header for the scope it needs (see peerAuthorizer in peer-auth.ts).
   * Absent: anonymous and read-only.
   */
  authorize?: RegistryAuthorizer | undefined;
  /** Bounds of the open blob uploads (with `authorize` only). */
  uploads?: UploadSessionOptions | undefined;
  /** Largest blob accepted by an upload (with `authorize` only). */
  maxBlobBytes?: WriteRoutesOptions['maxBlobBytes'];
  /** Hears the size of every chunk of blob bytes sent (a counter of what this endpoint uploaded). */
  onBlobBytesServed?: ((bytes: number) => void) | undefined;
  /**
   * The manifest of an image still being pushed here (agent/incoming.ts), by digest: served to GETs so peers
   * can start pulling; a HEAD, which asks whether the image is here, does not see it.
   */
  pendingManifest?: ((digest: Digest) => Buffer | undefined) | undefined;
  /**
   * Where standard clients get a token (the Docker/OCI token flow): a 401 then answers
   * `Bearer realm="<realm>",service="<service>",scope="…"`. Absent (or answering undefined, e.g. before
   * the machine has joined): `Basic realm="stowage"`.
   */
  tokenService?: (() => { realm: string; service: string } | undefined) | undefined;
}

const MAX_PAGE = 10_000;

function parsedTag(t: TagRecord): ImageReference | undefined {
  try {
    return parseReference(t.reference);
  } catch {
    return undefined;
  }
}

/** The name under which a peer can ask for this repository (see the name rule above). */
function publicName(ref: ImageReference): string {
  if (ref.domain === 'docker.io') return ref.path;
  const full = `${ref.domain}/${ref.path}`;
  const back = REPOSITORY_PATH_RE.test(full) ? normalisedRepo(full) : undefined;
  return back && back.domain === ref.domain && back.path === ref.path ? full : ref.path;
}

function matchesName(ref: ImageReference, name: string, normalised: ImageReference | undefined): boolean {
  if (normalised && ref.domain === normalised.domain && ref.path === normalised.path) return true;
  return ref.path === name;
}

/** The tag record `<name>:<tag>` resolves to by the name rule. */
export function findNameTag(images: ImageIndexApi, name: string, tag: string): TagRecord | undefined {
  const normalised = normalisedRepo(name);
  if (normalised) {
    const reference = formatReference({ ...normalised, tag });
    const exact = images.resolveTag(reference);
    if (exact) return images.tagsFor(exact).find((t) => t.reference === reference);
  }
  let best: TagRecord | undefined;
  for (const t of images.listTags()) {
    const ref = parsedTag(t);
    if (!ref || ref.tag !== tag || ref.digest !== undefined || ref.path !== name) continue;
    if (!best || t.updatedAt > best.updatedAt) best = t;
  }
  return best;
}

/** Resolves `<name>:<tag>` to a local digest by the name rule. */
function resolveNameTag(images: ImageIndexApi, name: string, tag: string): Digest | undefined {
  return findNameTag(images, name, tag)?.target;
}

/** Every tag name of `<name>` by the name rule, sorted. */
function tagsForName(images: ImageIndexApi, name: string): string[] {
  const normalised = normalisedRepo(name);
  const out = new Set<string>();
  for (const t of images.listTags()) {
    const ref = parsedTag(t);
    if (ref?.tag !== undefined && ref.digest === undefined && matchesName(ref, name, normalised)) out.add(ref.tag);
  }
  return [...out].sort();
}

/** `n` and `last` of a paginated list; undefined n means everything. */
function paginate(all: string[], query: Record<string, unknown>): { page: string[]; more: boolean; n: number | undefined } | 'invalid' {
  const rawN = query['n'];
  let n: number | undefined;
  if (rawN !== undefined && rawN !== '') {
    if (typeof rawN !== 'string' || !/^\d+$/.test(rawN)) return 'invalid';
    n = Math.min(Number(rawN), MAX_PAGE);
  }
  const last = typeof query['last'] === 'string' ? query['last'] : undefined;
  const after = last === undefined ? all : all.filter((x) => x > last);
  if (n === undefined) return { page: after, more: false, n };
  // n=0 asks for nothing: an empty page, and no Link (a next page of 0 entries would never end).
  return { page: after.slice(0, n), more: n > 0 && after.length > n, n };
}

function linkFor(path: string, n: number, last: string): string {
  return `<${path}?n=${n}&last=${encodeURIComponent(last)}>; rel="next"`;
}

/** Parses a single `bytes=` range against a size; undefined = serve the whole blob, 'unsatisfiable' = 416. */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | undefined {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return undefined; // malformed or multi-range: ignored, as RFC 9110 allows
  const [, a = '', b = ''] = m;
  if (a === '' && b === '') return undefined;
  if (a === '') {
    // suffix range: the last N bytes
    const n = Number(b);
    if (n === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  const end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
  if (!Number.isSafeInteger(start) || start >= size || (b !== '' && Number(b) < start)) return 'unsatisfiable';
  return { start, end };
}

/** The distribution API's version check: GET/HEAD `/v2/` (and `/v2`) answer 200 with `{}`. */
export function registerVersionCheck(app: FastifyInstance): void {
  const versionCheck = async (_req: FastifyRequest, reply: FastifyReply) => reply.code(200).type('application/json; charset=utf-8').send({});
  app.route({ method: ['GET', 'HEAD'], url: '/v2/', exposeHeadRoute: false, handler: versionCheck });
  app.route({ method: ['GET', 'HEAD'], url: '/v2', exposeHeadRoute: false, handler: versionCheck });
}

export async function registryRoutes(app: FastifyInstance, opts: RegistryRoutesOptions): Promise<void> {
  const { store, images } = opts;

  app.addHook('onSend', async (_req, reply, payload) => {
    reply.header('docker-distribution-api-version', 'registry/2.0');
    return payload;
  });

  app.setErrorHandler((err, _req, reply) => {
    if (isStowageError(err, 'BLOB_NOT_FOUND')) return sendError(reply, 404, 'BLOB_UNKNOWN', err.message);
    if (isStowageError(err, 'INVALID_DIGEST')) return sendError(reply, 400, 'DIGEST_INVALID', err.message);
    // The machine's runtime holds the blobs (containerd) and would not take or give them: say so, by its code.
    // Also as headers: a HEAD answer has no body to carry it.
    if (isStowageError(err, 'RUNTIME_UNAVAILABLE') || isStowageError(err, 'RUNTIME_ERROR')) {
      reply.header(STOWAGE_ERROR_HEADER, err.code).header(STOWAGE_MESSAGE_HEADER, headerSafe(err.message));
      return sendError(reply, 503, err.code as DistributionCode, err.message);
    }
    const full = storageFullOr(err);
    if (isStowageError(full, 'INSUFFICIENT_STORAGE')) return sendError(reply, 507, 'INSUFFICIENT_STORAGE', full.message);
    const status = (err as { statusCode?: number }).statusCode;
    if (status !== undefined && status >= 400 && status < 500) return sendError(reply, status, 'UNKNOWN', (err as Error).message);
    reply.log.error({ err }, 'registry route failed');
    return sendError(reply, 500, 'UNKNOWN', 'internal error');
  });

  registerVersionCheck(app);

  // Writes are refused before any body is read: anonymously always, and on /v2/ itself in any case.
  const refuse = async (req: FastifyRequest, reply: FastifyReply) => {
    await sendError(reply, 405, 'UNSUPPORTED', `${req.method} is not supported: this registry endpoint is read-only`);
    return reply;
  };
  const authorize = opts.authorize;
  let sessions: UploadSessions | undefined;
  if (authorize) {
    app.addHook('onRequest', async (req, reply) => {
      // The same decoded path the handlers route on (v2-path.ts): what is allowed here is what they do.
      const need = requiredAccess(req.method, v2Rest(req));
      const presented = req.headers.authorization;
      if (authorize(presented, need)) return undefined;
      reply.header('www-authenticate', challenge(need, presented !== undefined));
      const what = need.resource.kind === 'repository' ? ` on ${need.resource.name.slice(0, 200)}` : '';
      await sendError(reply, 401, 'UNAUTHORIZED', `authentication required: a ${need.scope} token for this machine${what}`);
      return reply;
    });
    // Upload bodies stay unread here: the handlers stream them into the store.
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
    const open = new UploadSessions(store, opts.uploads);
    sessions = open;
    app.addHook('onClose', async () => open.close());
    registerWriteRoutes(app, { store, images, sessions: open, maxBlobBytes: opts.maxBlobBytes, findNameTag });
    app.route({ method: ['POST', 'PUT', 'PATCH', 'DELETE'], url: '/v2/', onRequest: refuse, handler: refuse });
  } else {
    for (const url of ['/v2/', '/v2/*']) {
      app.route({ method: ['POST', 'PUT', 'PATCH', 'DELETE'], url, onRequest: refuse, handler: refuse });
    }
  }

  app.route({
    method: ['GET', 'HEAD'],
    url: '/v2/*',
    exposeHeadRoute: false,
    handler: async (req, reply) => {
      const target = v2Target(req);
      const head = req.method === 'HEAD';
      switch (target.kind) {
        case 'upload':
          if (sessions && !head) return uploadStatus(reply, sessions, target.name, target.uuid);
          break;
        case 'catalog':
          return catalog(req, reply);
        case 'tags':
          return tagsList(req, reply, target.name);
        case 'manifest':
          return manifest(reply, target.name, target.ref, head);
        case 'blob':
          return blob(req, reply, target.name, target.ref, head);
        case 'referrers':
          return referrers(req, reply, target.name, target.digest, head);
        default:
          break;
      }
      return sendError(reply, 404, 'UNSUPPORTED', `no such endpoint: /v2/${v2Rest(req).slice(0, 200)}`);
    },
  });

  /** The 401's challenge: where to get a token for what the request needs. */
  function challenge(need: Parameters<RegistryAuthorizer>[1], presented: boolean): string {
    const service = opts.tokenService?.();
    if (!service) return 'Basic realm="stowage"';
    const scope = challengeScope(need);
    const parts = [`realm="${service.realm}"`, `service="${service.service}"`];
    if (scope) parts.push(`scope="${scope}"`);
    if (presented) parts.push('error="insufficient_scope"');
    return `Bearer ${parts.join(',')}`;
  }

  async function referrers(req: FastifyRequest, reply: FastifyReply, name: string, digest: string, head: boolean) {
    if (!isRepositoryPath(name)) return sendError(reply, 400, 'NAME_INVALID', `invalid repository name "${name.slice(0, 200)}"`);
    if (!isDigest(digest)) return sendError(reply, 400, 'DIGEST_INVALID', `invalid digest "${digest.slice(0, 100)}"`);
    const filter = (req.query as Record<string, unknown>)['artifactType'];
    const artifactType = typeof filter === 'string' && filter !== '' ? filter : undefined;
    const body = Buffer.from(JSON.stringify(referrersIndex(images.referrersOf(digest), artifactType)));
    if (artifactType !== undefined) reply.header('oci-filters-applied', 'artifactType');
    reply.code(200).header('content-type', MediaType.OciIndex).header('content-length', String(body.length));
    return head ? reply.send() : reply.send(body);
  }

  async function catalog(req: FastifyRequest, reply: FastifyReply) {
    const names = new Set<string>();
    for (const t of images.listTags()) {
      const ref = parsedTag(t);
      if (ref) names.add(publicName(ref));
    }
    const all = [...names].sort();
    const p = paginate(all, req.query as Record<string, unknown>);
    if (p === 'invalid') return sendError(reply, 400, 'PAGINATION_NUMBER_INVALID', 'n must be a non-negative integer');
    if (p.more && p.n !== undefined) reply.header('link', linkFor('/v2/_catalog', p.n, p.page[p.page.length - 1] ?? ''));
    return reply.type('application/json; charset=utf-8').send({ repositories: p.page });
  }

  async function tagsList(req: FastifyRequest, reply: FastifyReply, name: string) {
    if (!isRepositoryPath(name)) return sendError(reply, 400, 'NAME_INVALID', `invalid repository name "${name.slice(0, 200)}"`);
    const all = tagsForName(images, name);
    if (all.length === 0) return sendError(reply, 404, 'NAME_UNKNOWN', `repository name not known to registry: ${name}`, { name });
    const p = paginate(all, req.query as Record<string, unknown>);
    if (p === 'invalid') return sendError(reply, 400, 'PAGINATION_NUMBER_INVALID', 'n must be a non-negative integer');
    if (p.more && p.n !== undefined) reply.header('link', linkFor(`/v2/${name}/tags/list`, p.n, p.page[p.page.length - 1] ?? ''));
    return reply.type('application/json; charset=utf-8').send({ name, tags: p.page });
  }

  async function manifest(reply: FastifyReply, name: string, ref: string, head: boolean) {
    if (!isRepositoryPath(name)) return sendError(reply, 400, 'NAME_INVALID', `invalid repository name "${name.slice(0, 200)}"`);
    let digest: Digest | undefined;
    if (ref.includes(':')) {
      if (!isDigest(ref)) return sendError(reply, 400, 'DIGEST_INVALID', `invalid digest "${ref.slice(0, 100)}"`);
      digest = ref;
    } else {
      // No such tag can exist, so none is known: 404, as registries answer (the suite's "nonexistent manifest").
      if (!isValidTag(ref)) return sendError(reply, 404, 'MANIFEST_UNKNOWN', `manifest unknown: invalid tag "${ref.slice(0, 100)}"`, { name, tag: ref.slice(0, 100) });
      digest = resolveNameTag(images, name, ref);
      if (!digest) return sendError(reply, 404, 'MANIFEST_UNKNOWN', `manifest unknown: ${name}:${ref}`, { name, tag: ref });
    }
    const mediaType = images.getImage(digest)?.manifestMediaType ?? images.getIndex(digest)?.mediaType ?? images.getArtifact(digest)?.manifestMediaType;
    let bytes: Buffer;
    try {
      bytes = await store.readBytes(digest, MAX_MANIFEST_BYTES);
    } catch (err) {
      const pending = !head && isStowageError(err, 'BLOB_NOT_FOUND') ? opts.pendingManifest?.(digest) : undefined;
      if (pending) bytes = pending;
      else if (isStowageError(err, 'BLOB_NOT_FOUND') || isStowageError(err, 'TOO_LARGE')) {
        return sendError(reply, 404, 'MANIFEST_UNKNOWN', `manifest unknown: ${name}@${digest}`, { name, digest });
      } else throw err;
    }
    let type = mediaType;
    if (type === undefined) {
      // A stored manifest with no record of its own (e.g. a child of a partly held index).
      try {
        type = parseManifestBytes(bytes).mediaType;
      } catch {
        return sendError(reply, 404, 'MANIFEST_UNKNOWN', `manifest unknown: ${name}@${digest}`, { name, digest });
      }
    }
    reply
      .code(200)
      .header('content-type', type)
      .header('docker-content-digest', digest)
      .header('etag', `"${digest}"`)
      .header('content-length', String(bytes.length));
    return head ? reply.send() : reply.send(bytes);
  }

  async function blob(req: FastifyRequest, reply: FastifyReply, name: string, ref: string, head: boolean) {
    if (!isRepositoryPath(name)) return sendError(reply, 400, 'NAME_INVALID', `invalid repository name "${name.slice(0, 200)}"`);
    if (!isDigest(ref)) return sendError(reply, 400, 'DIGEST_INVALID', `invalid digest "${ref.slice(0, 100)}"`);
    const info = await store.stat(ref);
    // A blob still arriving is served to GETs as it arrives (pipelined fan-out); a HEAD, which asks whether
    // the blob is here (e.g. before an upload skips it), says so only once it is whole and verified.
    const live = info || head ? undefined : store.liveReader?.(ref);
    if (!info && !live) return sendError(reply, 404, 'BLOB_UNKNOWN', `blob unknown to registry: ${ref}`, { digest: ref });
    const size = info?.size ?? (live as LiveBlobReader).size;
    const range = parseRange(req.headers.range, size);
    const blobHeaders = () =>
      reply
        .header('content-type', 'application/octet-stream')
        .header('docker-content-digest', ref)
        .header('etag', `"${ref}"`)
        .header('accept-ranges', 'bytes')
        .header('cache-control', 'max-age=31536000');
    if (range === 'unsatisfiable') {
      blobHeaders().header('content-range', `bytes */${size}`);
      return sendError(reply, 416, 'RANGE_INVALID', `range ${req.headers.range ?? ''} not satisfiable for ${size} bytes`);
    }
    // Open the blob before any of its headers is set: should it vanish (GC) after the stat, the answer
    // is a plain 404, not one carrying its length, digest and a year of cache lifetime. Once open, the
    // file stays readable whole even if it is unlinked.
    // A live blob's stream fails (the connection is cut) if its ingest does: never a short body that looks whole.
    const body = head ? undefined : live ? live.stream(range) : await store.createReadStream(ref, range);
    blobHeaders();
    if (range) {
      reply
        .code(206)
        .header('content-range', `bytes ${range.start}-${range.end}/${size}`)
        .header('content-length', String(range.end - range.start + 1));
    } else {
      reply.code(200).header('content-length', String(size));
    }
    // The headers go out at once: the first byte of a live blob may be a while coming, and a client that
    // sees nothing would take the machine for dead.
    if (live) reply.raw.once('pipe', () => reply.raw.flushHeaders());
    const count = opts.onBlobBytesServed;
    return reply.send(body && count ? counting(body, count) : body);
  }
}

/** `body` as it is read, each chunk's size told to `count`; an error or a close on either side ends both. */
function counting(body: Readable, count: (bytes: number) => void): Readable {
  // A blob file counts what it sends itself, so it can still be piped into the response with no stage between.
  if (body instanceof BlobFileStream) return body.countWith(count);
  const counted = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      count(chunk.length);
      done(null, chunk);
    },
  });
  pipeline(body, counted, () => undefined);
  return counted;
}
