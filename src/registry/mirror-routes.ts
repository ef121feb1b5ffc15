import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { isStowageError } from '../errors.js';
import { type Digest, isDigest } from '../oci/digest.js';
import { isValidTag } from '../oci/reference.js';
import { sendError } from './distribution-errors.js';
import type { MirrorBlob, PullThroughMirror } from './mirror.js';
import { isRepositoryPath } from './names.js';
import { parseRange, registerVersionCheck } from './routes.js';
import { v2Target } from './v2-path.js';

/**
 * The /v2/ of the pull-through mirror (see mirror.ts), read-only and anonymous: it listens on loopback only,
 * for the machine's own container runtime.
 *
 *   containerd (hosts.toml)  GET /v2/<name>/manifests/<ref>?ns=<registry host>   the registry is named by ns
 *   Docker (registry-mirrors) GET /v2/<name>/manifests/<ref>                      always Docker Hub: the default upstream
 *
 * Manifests come from the upstream registry; blobs from peers that hold them, else upstream.
 */

export interface MirrorRoutesOptions {
  mirror: PullThroughMirror;
  /** The registry asked when a request names none (no ?ns=): Docker's mirrors are Docker Hub's. */
  defaultUpstream: string;
}

const HOST = /^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9a-fA-F:]+\](:\d{1,5})?$/;

export async function mirrorRoutes(app: FastifyInstance, opts: MirrorRoutesOptions): Promise<void> {
  const { mirror } = opts;

  app.addHook('onSend', async (_req, reply, payload) => {
    reply.header('docker-distribution-api-version', 'registry/2.0');
    return payload;
  });

  app.setErrorHandler((err, _req, reply) => {
    if (isStowageError(err, 'BLOB_NOT_FOUND')) return sendError(reply, 404, 'BLOB_UNKNOWN', err.message);
    if (isStowageError(err, 'MANIFEST_NOT_FOUND') || isStowageError(err, 'IMAGE_NOT_FOUND')) return sendError(reply, 404, 'MANIFEST_UNKNOWN', err.message);
    if (isStowageError(err, 'UNAUTHORIZED') || isStowageError(err, 'DENIED')) return sendError(reply, 403, 'DENIED', `the upstream registry refused: ${err.message}`);
    if (isStowageError(err, 'DIGEST_MISMATCH')) return sendError(reply, 502, 'DIGEST_INVALID', err.message);
    if (isStowageError(err)) return sendError(reply, 502, 'UNKNOWN', `upstream: ${err.message}`);
    const status = (err as { statusCode?: number }).statusCode;
    if (status !== undefined && status >= 400 && status < 500) return sendError(reply, status, 'UNKNOWN', (err as Error).message);
    reply.log.error({ err }, 'mirror route failed');
    return sendError(reply, 500, 'UNKNOWN', 'internal error');
  });

  registerVersionCheck(app);
  // Refused before any body is read or parsed (a write with an unknown content type is a 405 too, not a 415).
  const readOnly = async (req: FastifyRequest, reply: FastifyReply) => {
    await sendError(reply, 405, 'UNSUPPORTED', `${req.method} is not supported: this mirror is read-only`);
    return reply;
  };
  for (const url of ['/v2/', '/v2/*']) app.route({ method: ['POST', 'PUT', 'PATCH', 'DELETE'], url, onRequest: readOnly, handler: readOnly });

  app.route({
    method: ['GET', 'HEAD'],
    url: '/v2/*',
    exposeHeadRoute: false,
    handler: async (req, reply) => {
      const target = v2Target(req);
      if (target.kind !== 'manifest' && target.kind !== 'blob') return sendError(reply, 404, 'UNSUPPORTED', 'a mirror serves manifests and blobs only');
      if (!isRepositoryPath(target.name)) return sendError(reply, 400, 'NAME_INVALID', `invalid repository name "${target.name.slice(0, 200)}"`);
      const ns = (req.query as Record<string, unknown>)['ns'];
      const host = typeof ns === 'string' && ns !== '' ? ns : opts.defaultUpstream;
      if (!HOST.test(host)) return sendError(reply, 400, 'NAME_INVALID', `invalid registry "${host.slice(0, 100)}" in ns`);
      const head = req.method === 'HEAD';
      if (target.kind === 'manifest') {
        if (target.ref.includes(':') ? !isDigest(target.ref) : !isValidTag(target.ref)) {
          return sendError(reply, 404, 'MANIFEST_UNKNOWN', `manifest unknown: invalid reference "${target.ref.slice(0, 100)}"`);
        }
        const m = await mirror.manifest(host, target.name, target.ref);
        reply
          .code(200)
          .header('content-type', m.mediaType)
          .header('docker-content-digest', m.digest)
          .header('etag', `"${m.digest}"`)
          .header('content-length', String(m.bytes.length));
        return head ? reply.send() : reply.send(m.bytes);
      }
      if (!isDigest(target.ref)) return sendError(reply, 400, 'DIGEST_INVALID', `invalid digest "${target.ref.slice(0, 100)}"`);
      const digest: Digest = target.ref;
      if (head) {
        const size = await mirror.blobSize(host, target.name, digest);
        if (size === undefined) return sendError(reply, 404, 'BLOB_UNKNOWN', `blob unknown to registry: ${digest}`);
        return blobHeaders(reply, digest).code(200).header('content-length', String(size)).send();
      }
      return sendBlob(req, reply, digest, await mirror.blob(host, target.name, digest));
    },
  });
}

function blobHeaders(reply: FastifyReply, digest: Digest): FastifyReply {
  return reply
    .header('content-type', 'application/octet-stream')
    .header('docker-content-digest', digest)
    .header('etag', `"${digest}"`)
    .header('accept-ranges', 'bytes');
}

async function sendBlob(req: FastifyRequest, reply: FastifyReply, digest: Digest, blob: MirrorBlob): Promise<FastifyReply> {
  const range = parseRange(req.headers.range, blob.size);
  if (range === 'unsatisfiable') {
    blobHeaders(reply, digest).header('content-range', `bytes */${blob.size}`);
    return sendError(reply, 416, 'RANGE_INVALID', `range ${req.headers.range ?? ''} not satisfiable for ${blob.size} bytes`);
  }
  const body = await blob.open(range);
  blobHeaders(reply, digest);
  if (range) {
    reply.code(206).header('content-range', `bytes ${range.start}-${range.end}/${blob.size}`).header('content-length', String(range.end - range.start + 1));
  } else {
    reply.code(200).header('content-length', String(blob.size));
  }
  // The headers go out at once: the first bytes may come from far away, and a silent client gives up.
  reply.raw.once('pipe', () => reply.raw.flushHeaders());
  // A blob still arriving whose source fails cuts the connection: never a short body that looks whole.
  return reply.send(body);
}
