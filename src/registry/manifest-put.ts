import type { IncomingMessage } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { StowageError, isStowageError } from '../errors.js';
import { MAX_MANIFEST_BYTES } from '../oci/media-types.js';
import type { ContentStoreApi, ImageIndexApi } from '../store/types.js';
import { sendError } from './distribution-errors.js';
import { recordPushedManifest } from './record-manifest.js';

/** PUT /v2/<name>/manifests/<ref>: reads the body (bounded), records it, answers 201 or a distribution error. */
export async function putManifest(
  req: FastifyRequest,
  reply: FastifyReply,
  handles: { store: ContentStoreApi; images: ImageIndexApi },
  name: string,
  ref: string,
): Promise<FastifyReply> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > MAX_MANIFEST_BYTES) {
    return sendError(reply.header('connection', 'close'), 413, 'SIZE_INVALID', `manifest is ${declared} bytes; the limit is ${MAX_MANIFEST_BYTES}`);
  }
  const bytes = await readBounded(req.raw, MAX_MANIFEST_BYTES);
  if (bytes === undefined) return sendError(reply.header('connection', 'close'), 413, 'SIZE_INVALID', `manifest is larger than ${MAX_MANIFEST_BYTES} bytes`);
  const contentType = req.headers['content-type'];
  try {
    const recorded = await recordPushedManifest(handles, { name, ref, bytes, contentType });
    // The spec's signal that this registry keeps the referrers list itself (clients then skip the tag schema).
    if (recorded.subject !== undefined) reply.header('oci-subject', recorded.subject);
    return reply
      .code(201)
      .header('location', `/v2/${name}/manifests/${recorded.digest}`)
      .header('docker-content-digest', recorded.digest)
      .header('content-length', '0')
      .send();
  } catch (err) {
    if (!isStowageError(err)) throw err;
    switch (err.code) {
      case 'INVALID_DIGEST':
      case 'DIGEST_MISMATCH':
        return sendError(reply, 400, 'DIGEST_INVALID', err.message);
      case 'INVALID_REFERENCE':
        return err.details?.['what'] === 'tag' ? sendError(reply, 400, 'TAG_INVALID', err.message) : sendError(reply, 400, 'NAME_INVALID', err.message);
      case 'TOO_LARGE':
        return sendError(reply, 413, 'SIZE_INVALID', err.message);
      case 'BLOB_NOT_FOUND':
        return sendError(reply, 400, 'MANIFEST_BLOB_UNKNOWN', err.message, err.details);
      case 'INVALID_MANIFEST':
      case 'UNSUPPORTED':
        return sendError(reply, 400, 'MANIFEST_INVALID', err.message);
      default:
        throw err;
    }
  }
}

/**
 * The whole body, or undefined once it passes `limit`. Reading then stops without destroying the request
 * (that would reset the socket before the 413 reaches the client); the caller answers with Connection: close.
 */
function readBounded(raw: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const cleanup = () => {
      raw.off('data', onData);
      raw.off('end', onEnd);
      raw.off('error', onError);
      raw.off('close', onClose);
    };
    const onData = (chunk: Buffer) => {
      total += chunk.length;
      if (total > limit) {
        cleanup();
        raw.pause();
        resolve(undefined);
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(Buffer.concat(chunks));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(new StowageError('TRUNCATED', `manifest upload failed: ${err.message}`, { cause: err }));
    };
    const onClose = () => {
      cleanup();
      reject(new StowageError('TRUNCATED', 'the client went away before the whole manifest arrived'));
    };
    raw.on('data', onData);
    raw.on('end', onEnd);
    raw.on('error', onError);
    raw.on('close', onClose);
  });
}
