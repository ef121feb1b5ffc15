import type { IncomingMessage } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { StowageError, isStorageFull, isStowageError, storageFullOr } from '../errors.js';
import { type Digest, isDigest } from '../oci/digest.js';
import type { ContentStoreApi, ImageIndexApi, TagRecord } from '../store/types.js';
import { deleteBlob, deleteManifest } from './content-delete.js';
import { sendError, uploadRange } from './distribution-errors.js';
import { putManifest } from './manifest-put.js';
import { isRepositoryPath } from './names.js';
import type { UploadSession, UploadSessions } from './upload-sessions.js';
import { v2Rest, v2Target } from './v2-path.js';
import { putWholeBlob } from './whole-blob-upload.js';

/**
 * The write half of /v2/ (OCI distribution push), registered only when requests are authenticated:
 *
 *   POST   /v2/<name>/blobs/uploads/                  202 new upload; ?digest= monolithic (201); ?mount=&from= (201 if held)
 *   PATCH  /v2/<name>/blobs/uploads/<uuid>            append a chunk (Content-Range checked: 416 off the current end)
 *   PUT    /v2/<name>/blobs/uploads/<uuid>?digest=    optional last chunk, verify, publish: 201
 *   GET    /v2/<name>/blobs/uploads/<uuid>            204 with the Range received so far
 *   DELETE /v2/<name>/blobs/uploads/<uuid>            cancel
 *   PUT    /v2/<name>/manifests/<tag|digest>          see manifest-put.ts
 *   DELETE /v2/<name>/manifests/<tag|digest>          202; see content-delete.ts
 *   DELETE /v2/<name>/blobs/<digest>                  202; see content-delete.ts
 *
 * Bodies are streamed into the store's ingests, never held whole.
 */

export interface WriteRoutesOptions {
  store: ContentStoreApi;
  images: ImageIndexApi;
  sessions: UploadSessions;
  /** Largest blob accepted (default 64 GiB): an upload cannot fill the disk without bound. */
  maxBlobBytes?: number | undefined;
  /** The tag record `<name>:<tag>` names, by the name rule of routes.ts. */
  findNameTag: (images: ImageIndexApi, name: string, tag: string) => TagRecord | undefined;
}

export const DEFAULT_MAX_BLOB_BYTES = 64 * 1024 ** 3;

function uploadLocation(s: UploadSession): string {
  return `/v2/${s.name}/blobs/uploads/${s.uuid}`;
}

function queryString(req: FastifyRequest, key: string): string | undefined {
  const v = (req.query as Record<string, unknown>)[key];
  return typeof v === 'string' ? v : undefined;
}

/** Whether the request carries a body at all (a PUT that closes an upload often has none). */
function hasBody(raw: IncomingMessage): boolean {
  const len = raw.headers['content-length'];
  if (len !== undefined) return len !== '0';
  return raw.headers['transfer-encoding'] !== undefined;
}

/**
 * The request body, failing with TOO_LARGE once the blob would pass `limit` bytes (counting `already`).
 * Stopping early leaves the request open (not destroyed), so drainRequest can let the client read the answer.
 */
async function* bounded(raw: IncomingMessage, already: number, limit: number): AsyncIterable<Uint8Array> {
  let total = already;
  for await (const chunk of raw.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limit) throw new StowageError('TOO_LARGE', `blob is larger than the ${limit} bytes accepted`, { details: { limit } });
    yield chunk;
  }
}

/** Most bytes of an unread request body discarded so the client sees an error answer rather than a reset. */
const MAX_DRAIN_BYTES = 256 * 1024 * 1024;

/**
 * Reads and discards the rest of a request whose answer is an error. A client still sending (skopeo, docker)
 * reads the answer only once its body is out; closing the connection under it instead turns a clear 507 or
 * 413 into "use of closed network connection". Past MAX_DRAIN_BYTES the connection is closed after all.
 */
function drainRequest(raw: IncomingMessage): void {
  if (raw.readableEnded || raw.destroyed) return;
  let drained = 0;
  raw.on('data', (chunk: Buffer) => {
    drained += chunk.length;
    if (drained > MAX_DRAIN_BYTES) raw.destroy();
  });
  raw.on('error', () => undefined);
  raw.resume();
}

/** The body's declared length (Content-Length), when it gives one. */
function declaredLength(raw: IncomingMessage): number | undefined {
  const len = raw.headers['content-length'];
  return len !== undefined && /^\d{1,15}$/.test(len) ? Number(len) : undefined;
}

/** TOO_LARGE before anything is read when the declared length already passes the limit (so the 413 gets through). */
function checkDeclaredLength(raw: IncomingMessage, already: number, limit: number): void {
  const len = Number(raw.headers['content-length'] ?? 0);
  if (already + len > limit) throw new StowageError('TOO_LARGE', `blob would be larger than the ${limit} bytes accepted`, { details: { limit } });
}

/** `start-end` (as the distribution spec writes it; "bytes start-end/total" accepted too). */
function parseContentRange(header: string): { start: number; end: number } | undefined {
  const m = /^(?:bytes[ =])?(\d{1,15})-(\d{1,15})(?:\/(?:\d+|\*))?$/.exec(header.trim());
  if (!m) return undefined;
  const start = Number(m[1]);
  const end = Number(m[2]);
  return end >= start ? { start, end } : undefined;
}

export function registerWriteRoutes(app: FastifyInstance, opts: WriteRoutesOptions): void {
  const { store, images, sessions } = opts;
  const maxBlob = opts.maxBlobBytes ?? DEFAULT_MAX_BLOB_BYTES;

  app.route({
    method: ['POST', 'PUT', 'PATCH', 'DELETE'],
    url: '/v2/*',
    handler: async (req, reply) => {
      const target = v2Target(req); // the path the authorization check read (v2-path.ts)
      if (target.kind !== 'manifest' && target.kind !== 'blob' && target.kind !== 'upload-start' && target.kind !== 'upload') {
        return sendError(reply, 404, 'UNSUPPORTED', `no such endpoint: ${req.method} /v2/${v2Rest(req).slice(0, 200)}`);
      }
      if (!isRepositoryPath(target.name)) return sendError(reply, 400, 'NAME_INVALID', `invalid repository name "${target.name.slice(0, 200)}"`);
      if (target.kind === 'manifest') {
        if (req.method === 'PUT') return putManifest(req, reply, { store, images }, target.name, target.ref);
        if (req.method === 'DELETE') return deleteManifest(reply, { store, images }, target.name, target.ref, opts.findNameTag);
        return sendError(reply, 405, 'UNSUPPORTED', `${req.method} of manifests is not supported`);
      }
      if (target.kind === 'blob') {
        if (req.method === 'DELETE') return deleteBlob(reply, { store, images }, target.ref);
        return sendError(reply, 405, 'UNSUPPORTED', `${req.method} of blobs is not supported: upload through /v2/${target.name}/blobs/uploads/`);
      }
      if (target.kind === 'upload-start') {
        if (req.method !== 'POST') return sendError(reply, 405, 'UNSUPPORTED', `${req.method} is not supported on /v2/${target.name}/blobs/uploads/`);
        return startUpload(req, reply, target.name);
      }
      const session = sessions.get(target.name, target.uuid);
      if (!session) return sendError(reply, 404, 'BLOB_UPLOAD_UNKNOWN', `blob upload unknown to registry: ${target.uuid.slice(0, 100)}`);
      try {
        switch (req.method) {
          case 'PATCH':
            return await patchUpload(req, reply, session);
          case 'PUT':
            return await finishUpload(req, reply, session);
          case 'DELETE':
            await sessions.cancel(session);
            return reply.code(204).send();
          default:
            return sendError(reply, 405, 'UNSUPPORTED', `${req.method} is not supported on an upload`);
        }
      } catch (err) {
        drainRequest(req.raw);
        return sendUploadError(reply, err);
      }
    },
  });

  async function startUpload(req: FastifyRequest, reply: FastifyReply, name: string) {
    const digest = queryString(req, 'digest');
    const mount = queryString(req, 'mount');
    if (digest !== undefined) {
      // Monolithic: the whole blob in this one request.
      if (!isDigest(digest)) return sendError(reply, 400, 'DIGEST_INVALID', `invalid digest "${digest.slice(0, 100)}"`);
      try {
        checkDeclaredLength(req.raw, 0, maxBlob);
        await putWholeBlob(store, bounded(req.raw, 0, maxBlob), digest, declaredLength(req.raw));
      } catch (err) {
        drainRequest(req.raw);
        return sendUploadError(reply, err);
      }
      return blobCreated(reply, name, digest);
    }
    if (mount !== undefined && isDigest(mount) && (await store.has(mount))) {
      // Blobs are content-addressed: one held for any repository is there for every repository.
      return blobCreated(reply, name, mount);
    }
    let session: UploadSession;
    try {
      session = await sessions.open(name);
    } catch (err) {
      return sendUploadError(reply, err);
    }
    return uploadAccepted(reply.code(202), session);
  }

  async function patchUpload(req: FastifyRequest, reply: FastifyReply, session: UploadSession) {
    const header = req.headers['content-range'];
    const offset = session.ingest.offset;
    if (typeof header === 'string') {
      const range = parseContentRange(header);
      const len = req.headers['content-length'];
      const lengthMatches = len === undefined || !range || Number(len) === range.end - range.start + 1;
      if (!range || range.start !== offset || !lengthMatches) {
        reply.header('range', uploadRange(offset)).header('location', uploadLocation(session)).header('docker-upload-uuid', session.uuid);
        return sendError(reply, 416, 'RANGE_INVALID', `content range "${header.slice(0, 100)}" does not continue the upload at offset ${offset}`);
      }
    }
    try {
      checkDeclaredLength(req.raw, offset, maxBlob);
      await sessions.use(session, async () => ({ result: await session.ingest.write(bounded(req.raw, offset, maxBlob)) }));
    } catch (err) {
      // An upload past the limit, or one the disk had no room for (its bytes are already gone), cannot be
      // finished: drop it rather than keep it until it expires.
      if (isStowageError(err, 'TOO_LARGE') || isStorageFull(err)) await sessions.cancel(session).catch(() => undefined);
      throw err;
    }
    return uploadAccepted(reply.code(202), session);
  }

  async function finishUpload(req: FastifyRequest, reply: FastifyReply, session: UploadSession) {
    const digest = queryString(req, 'digest');
    if (digest === undefined || !isDigest(digest)) {
      return sendError(reply, 400, 'DIGEST_INVALID', digest === undefined ? 'the digest query parameter is required to finish an upload' : `invalid digest "${digest.slice(0, 100)}"`);
    }
    if (session.ingest.offset === 0 && hasBody(req.raw)) return finishWhole(req, reply, session, digest);
    try {
      await sessions.use(session, async () => {
        if (hasBody(req.raw)) {
          checkDeclaredLength(req.raw, session.ingest.offset, maxBlob);
          await session.ingest.write(bounded(req.raw, session.ingest.offset, maxBlob));
        }
        // Verified against the digest before the blob becomes visible; a mismatch drops the bytes.
        await session.ingest.commit({ digest });
        return { result: undefined, done: true };
      });
    } catch (err) {
      if (isStowageError(err, 'DIGEST_MISMATCH') || isStowageError(err, 'SIZE_MISMATCH')) sessions.forget(session);
      if (isStowageError(err, 'TOO_LARGE') || isStorageFull(err)) await sessions.cancel(session).catch(() => undefined);
      throw err;
    }
    return blobCreated(reply, session.name, digest);
  }

  /**
   * The PUT brings every byte of the upload: they go through the digest's own ingest, so peers read them as
   * they arrive (whole-blob-upload.ts). The session's ingest held nothing and goes either way.
   */
  async function finishWhole(req: FastifyRequest, reply: FastifyReply, session: UploadSession, digest: Digest) {
    let ran = false;
    try {
      await sessions.use(session, async () => {
        ran = true;
        try {
          checkDeclaredLength(req.raw, 0, maxBlob);
          await putWholeBlob(store, bounded(req.raw, 0, maxBlob), digest, declaredLength(req.raw));
        } finally {
          await session.ingest.abort().catch(() => undefined);
        }
        return { result: undefined, done: true };
      });
    } catch (err) {
      if (ran) sessions.forget(session); // its ingest is gone; a request refused as busy leaves it to the other
      throw err;
    }
    return blobCreated(reply, session.name, digest);
  }
}

function uploadAccepted(reply: FastifyReply, session: UploadSession): FastifyReply {
  return reply
    .header('location', uploadLocation(session))
    .header('docker-upload-uuid', session.uuid)
    .header('range', uploadRange(session.ingest.offset))
    .header('content-length', '0')
    .send();
}

function blobCreated(reply: FastifyReply, name: string, digest: Digest): FastifyReply {
  return reply.code(201).header('location', `/v2/${name}/blobs/${digest}`).header('docker-content-digest', digest).header('content-length', '0').send();
}

/** GET of an upload: how far it got. */
export function uploadStatus(reply: FastifyReply, sessions: UploadSessions, name: string, uuid: string): FastifyReply {
  const session = sessions.get(name, uuid);
  if (!session) return sendError(reply, 404, 'BLOB_UPLOAD_UNKNOWN', `blob upload unknown to registry: ${uuid.slice(0, 100)}`);
  return uploadAccepted(reply.code(204), session);
}

/** Maps what the store and the sessions throw to distribution errors. */
function sendUploadError(reply: FastifyReply, err: unknown): FastifyReply {
  err = storageFullOr(err);
  if (!isStowageError(err)) throw err;
  switch (err.code) {
    case 'INSUFFICIENT_STORAGE':
      return sendError(reply, 507, 'INSUFFICIENT_STORAGE', err.message);
    case 'DIGEST_MISMATCH':
    case 'INVALID_DIGEST':
      return sendError(reply, 400, 'DIGEST_INVALID', err.message);
    case 'SIZE_MISMATCH':
      return sendError(reply, 400, 'SIZE_INVALID', err.message);
    case 'TOO_LARGE':
      return err.status === 429 ? sendError(reply, 429, 'TOOMANYREQUESTS', err.message) : sendError(reply, 413, 'SIZE_INVALID', err.message);
    case 'CONFLICT':
      return sendError(reply, 409, 'BLOB_UPLOAD_INVALID', err.message);
    default:
      throw err;
  }
}
