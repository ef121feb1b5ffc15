import { PassThrough } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import { bearerToken } from '../control/auth/api-keys.js';
import { type ErrorBody, incomingRequestSchema, revokedTokensSchema, transferRequestSchema, unloadRequestSchema } from '../control/wire.js';
import { type RevokedTokens, secretsEqual } from '../control/peer-token.js';
import { StowageError, isStowageError, storageFullOr } from '../errors.js';
import { isDigest } from '../oci/digest.js';
import { parsePlatform } from '../oci/platform.js';
import type { ContentStoreApi, ImageIndexApi } from '../store/types.js';
import { describeIssues } from '../validation.js';
import type { IncomingUploads } from './incoming.js';
import { computeInventory } from './inventory.js';
import { planTransfer } from './transfer-request.js';
import type { TransferManager } from './transfers.js';
import { unloadImage } from './unload.js';
import type { RuntimeAdapter } from '../runtime/runtime.js';

/**
 * The agent's API for the control plane, under /agent/v1 on the peer server, every request with
 * `Authorization: Bearer <machine secret>`:
 *
 *   POST /agent/v1/transfers        fetch an image from a peer or registry; NDJSON progress, result or error
 *   POST /agent/v1/transfers/refresh  renewed tokens / new peers for a running transfer (204, or 404)
 *   GET  /agent/v1/images/:digest   the inventory item of one platform image (404 IMAGE_NOT_FOUND)
 *   GET  /agent/v1/inventory        {seq, items}
 *   GET  /agent/v1/stats            {blob_bytes_served, mirror_bytes_from_peers?, mirror_bytes_from_upstream?, mirror_blobs_from_…?}
 *   POST /agent/v1/incoming         {operation_id, manifest, ttl_seconds}: an image is being pushed here (204)
 *   DELETE /agent/v1/incoming/:op   the push ended (204, or 404)
 *   POST /agent/v1/unload           {ref, platform?} → {removed}
 *
 * Errors are `{error: {code, message}}` with the code's status.
 */

export interface AgentApiOptions {
  /** The machine secret; undefined while the machine has not joined (every request is refused then). */
  secret: () => string | undefined;
  store: ContentStoreApi;
  images: ImageIndexApi;
  /** Where images land; unload takes them out of it too. */
  runtime: RuntimeAdapter;
  transfers: TransferManager;
  /** Images being pushed here, announced so peers can read their blobs as they arrive. */
  incoming?: IncomingUploads | undefined;
  /** The seq of the inventory last acknowledged by the control plane. */
  inventorySeq: () => number;
  /** Counters of what this machine did for others (GET /agent/v1/stats). */
  stats?: (() => AgentStats) | undefined;
  /** Told of tokens to refuse from now on (POST /agent/v1/revocations, when the control plane revokes them). */
  revoke?: ((tokens: RevokedTokens) => void) | undefined;
}

export interface AgentStats {
  /** Blob bytes this machine's /v2/ has sent since it started (what it uploaded to peers and clients). */
  blob_bytes_served: number;
  /** With a pull-through mirror: the blob bytes it took from peers, and from upstream registries. */
  mirror_bytes_from_peers?: number;
  mirror_bytes_from_upstream?: number;
  /** With a pull-through mirror: the blobs it brought in whole and verified, by where their last bytes came from. */
  mirror_blobs_from_peers?: number;
  mirror_blobs_from_upstream?: number;
}

function errorBody(code: string, message: string, details?: Record<string, unknown>): ErrorBody {
  return { error: details ? { code, message, details } : { code, message } };
}

function parseBody<S extends z.ZodTypeAny>(schema: S, body: unknown): z.infer<S> {
  const parsed = schema.safeParse(body);
  if (!parsed.success) {
    throw new StowageError('BAD_REQUEST', `invalid request: ${describeIssues(parsed.error, '(body)')}`);
  }
  return parsed.data;
}

/** Bearer secret, compared in constant time. */
function authorised(req: FastifyRequest, secret: string | undefined): boolean {
  if (secret === undefined) return false;
  const presented = bearerToken(req.headers.authorization);
  return presented !== undefined && secretsEqual(presented, secret);
}

export async function agentApiRoutes(app: FastifyInstance, opts: AgentApiOptions): Promise<void> {
  app.setErrorHandler((caught, _req, reply) => {
    const err = storageFullOr(caught);
    if (isStowageError(err)) return reply.code(err.status).send(errorBody(err.code, err.message, err.details));
    const status = (err as { statusCode?: unknown }).statusCode;
    if (typeof status === 'number' && status >= 400 && status < 500) return reply.code(status).send(errorBody('BAD_REQUEST', (err as Error).message));
    return reply.code(500).send(errorBody('INTERNAL', err instanceof Error ? err.message : String(err)));
  });
  app.setNotFoundHandler((req, reply) => reply.code(404).send(errorBody('NOT_FOUND', `no route ${req.method} ${req.url}`)));

  app.addHook('onRequest', async (req, reply) => {
    if (!authorised(req, opts.secret())) {
      return reply.code(401).header('www-authenticate', 'Bearer').send(errorBody('UNAUTHORIZED', 'a valid machine secret is required (Authorization: Bearer <machine secret>)'));
    }
    return undefined;
  });

  app.post('/revocations', async (req: FastifyRequest) => {
    const tokens = parseBody(revokedTokensSchema, req.body);
    opts.revoke?.(tokens);
    return { ok: true };
  });

  app.post('/transfers', async (req: FastifyRequest, reply: FastifyReply) => {
    const plan = planTransfer(parseBody(transferRequestSchema, req.body));
    const transfer = opts.transfers.start(plan);
    const out = new PassThrough();
    // The transfer goes on when this client goes away: a later request for it attaches again.
    const unsubscribe = transfer.subscribe((event) => {
      out.write(`${JSON.stringify(event)}\n`);
      if (event.type !== 'progress') out.end();
    });
    reply.raw.once('close', () => {
      unsubscribe();
      out.destroy();
    });
    return reply.code(200).type('application/x-ndjson').header('cache-control', 'no-store').send(out);
  });

  // The same request again, for a transfer already running: it takes the renewed peer tokens and the new
  // peers (a re-plan) without opening another progress stream. 404 when no such transfer runs.
  app.post('/transfers/refresh', async (req: FastifyRequest, reply: FastifyReply) => {
    const plan = planTransfer(parseBody(transferRequestSchema, req.body));
    if (!opts.transfers.refresh(plan)) throw new StowageError('TRANSFER_NOT_FOUND', 'no such transfer is running here');
    return reply.code(204).send();
  });

  app.get('/images/:digest', async (req: FastifyRequest<{ Params: { digest: string } }>) => {
    const { digest } = req.params;
    if (!isDigest(digest)) throw new StowageError('INVALID_DIGEST', `"${digest.slice(0, 80)}" is not a sha256 digest`);
    const item = computeInventory(opts.images, (rec) => opts.runtime.holds(rec)).get(digest);
    if (!item) throw new StowageError('IMAGE_NOT_FOUND', `no image ${digest} on this machine`);
    return item;
  });

  app.get('/stats', async () => opts.stats?.() ?? { blob_bytes_served: 0 });

  app.get('/inventory', async () => {
    const seq = opts.inventorySeq();
    return { seq, items: [...computeInventory(opts.images, (rec) => opts.runtime.holds(rec)).values()] };
  });

  app.post('/incoming', async (req: FastifyRequest, reply: FastifyReply) => {
    const body = parseBody(incomingRequestSchema, req.body);
    if (!opts.incoming) throw new StowageError('UNSUPPORTED', "this agent takes no push announcements: its store (the runtime's) cannot serve blobs while they arrive");
    await opts.incoming.announce(body.operation_id, body.manifest, body.ttl_seconds * 1000);
    return reply.code(204).send();
  });

  app.delete('/incoming/:op', async (req: FastifyRequest<{ Params: { op: string } }>, reply: FastifyReply) => {
    if (!opts.incoming?.withdraw(req.params.op)) throw new StowageError('OPERATION_NOT_FOUND', 'no such push is announced here');
    return reply.code(204).send();
  });

  app.post('/unload', async (req: FastifyRequest) => {
    const body = parseBody(unloadRequestSchema, req.body);
    const platform = body.platform === undefined ? undefined : parsePlatform(body.platform);
    const { removed } = await unloadImage({ store: opts.store, images: opts.images }, body.ref, platform);
    await opts.runtime.remove(removed);
    return { removed };
  });
}
