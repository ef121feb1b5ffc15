import type { FastifyInstance, FastifyRequest } from 'fastify';
import { StowageError } from '../../errors.js';
import { bearerToken } from '../auth/api-keys.js';
import type { ControlContext } from '../context.js';
import { publicMachine } from '../machines.js';
import { secretsEqual } from '../peer-token.js';
import { blobSources } from '../blob-sources.js';
import { signCsr } from '../../cluster/pki.js';
import { parseJoinSecret } from '../../cluster/join-token.js';
import type { MachineRecord } from '../machines.js';
import { blobSourcesRequestSchema, certificateRequestSchema, fullInventorySchema, inventoryDeltaSchema, joinRequestSchema } from '../wire.js';
import { HeartbeatBodies } from './heartbeat-bodies.js';
import { parseWith } from './errors.js';
import { CLUSTER_ROLES, requireMachine, requireMachineSecret, requireUser } from './guards.js';

/** Inventories reach 100k items; only these routes take bodies this large. */
const INVENTORY_BODY_LIMIT = 64 * 1024 * 1024;

/** Joining, inventories and heartbeats from agents; the machine list for operators. */
export function machineRoutes(app: FastifyInstance, ctx: ControlContext, fullJoinToken: string): void {
  // The token file may carry the CA pin (sjt_…@sha256:…); agents present the secret before it.
  const joinToken = parseJoinSecret(fullJoinToken);
  /** The machine's certificate: named after it, valid for the host it is reached at (its agent_url). */
  const machineCertificate = (machine: MachineRecord, csr: string): Promise<string> => {
    const tls = ctx.tls;
    if (!tls) throw new StowageError('BAD_REQUEST', 'this control plane serves no TLS: it signs no certificates');
    const host = new URL(machine.agent_url).hostname.replace(/^\[|\]$/g, '');
    return signCsr(tls.ca, csr, { name: machine.id, altNames: [host], use: 'both', lifetimeMs: ctx.config.machineCertLifetimeSeconds * 1000 });
  };
  // The join token comes as the bearer, so a stranger is refused before a large body is read; the body
  // repeats it (the wire contract), and both must match.
  const joinTokenFirst = {
    bodyLimit: INVENTORY_BODY_LIMIT,
    onRequest: async (request: FastifyRequest) => {
      const presented = bearerToken(request.headers.authorization);
      if (presented === undefined || !secretsEqual(parseJoinSecret(presented), joinToken)) throw new StowageError('UNAUTHORIZED', 'wrong or missing join token (Authorization: Bearer sjt_…)');
    },
  };

  app.post('/api/v1/machines/join', joinTokenFirst, async (request, reply) => {
    const req = parseWith(joinRequestSchema, request.body);
    if (!secretsEqual(parseJoinSecret(req.join_token), joinToken)) throw new StowageError('UNAUTHORIZED', 'wrong join token');
    if (ctx.tls && req.csr === undefined) throw new StowageError('BAD_REQUEST', 'this control plane serves TLS: the join needs a csr for the machine certificate');
    const { csr, ...joinRequest } = req;
    const { machine, secret } = await ctx.machines.join(joinRequest);
    const certificate = ctx.tls && csr !== undefined ? await machineCertificate(machine, csr) : undefined;
    ctx.log.info({ machine: machine.id, agent_url: machine.agent_url }, 'machine joined');
    return reply.code(201).send({
      machine_id: machine.id,
      machine_secret: secret,
      heartbeat_interval_ms: ctx.config.heartbeatIntervalMs,
      ...(certificate ? { certificate } : {}),
    });
  });

  // A machine renews its certificate (new key, new CSR) before the current one expires.
  app.post<{ Params: { id: string } }>('/api/v1/machines/:id/certificate', async (request) => {
    const machine = await requireMachine(ctx, request, request.params.id);
    const { csr } = parseWith(certificateRequestSchema, request.body);
    return { certificate: await machineCertificate(machine, csr) };
  });

  // The machine is authenticated before its (large) body is read.
  const machineFirst = { bodyLimit: INVENTORY_BODY_LIMIT, onRequest: async (request: FastifyRequest<{ Params: { id: string } }>) => requireMachineSecret(ctx, request, request.params.id) };

  app.put<{ Params: { id: string } }>('/api/v1/machines/:id/inventory', machineFirst, async (request) => {
    const body = parseWith(fullInventorySchema, request.body);
    await ctx.machines.replaceInventory(request.params.id, body.seq, body.items);
    return { seq: body.seq, revoked: ctx.revocations.active() };
  });

  app.post<{ Params: { id: string } }>('/api/v1/machines/:id/inventory/delta', machineFirst, async (request) => {
    const delta = parseWith(inventoryDeltaSchema, request.body);
    await ctx.machines.applyDelta(request.params.id, delta);
    return { seq: delta.seq };
  });

  // Heartbeats in a scope of their own: their bodies are read as text (see HeartbeatBodies).
  const bodies = new HeartbeatBodies();
  void app.register(async (scope) => {
    bodies.readAsText(scope);
    scope.post<{ Params: { id: string } }>('/api/v1/machines/:id/heartbeat', async (request) => {
      const id = request.params.id;
      // A secret verified before is checked by the heartbeat's own UPDATE (one statement; see verifiedSecret).
      const sealed = ctx.machines.verifiedSecret(id, bearerToken(request.headers.authorization));
      if (sealed === undefined) await requireMachineSecret(ctx, request, id);
      let beat;
      try {
        beat = bodies.parse(id, request);
      } catch (err) {
        if (sealed !== undefined) await requireMachineSecret(ctx, request, id); // not authenticated comes first
        throw err;
      }
      const { inventory_seq, ...info } = beat;
      let machine = sealed === undefined ? undefined : await ctx.machines.heartbeat(id, info, sealed);
      if (!machine) {
        // Revoked or joined again since: authenticated afresh (401 for a secret no longer valid).
        if (sealed !== undefined) await requireMachineSecret(ctx, request, id);
        machine = await ctx.machines.heartbeat(id, info);
      }
      if (!machine) throw new StowageError('MACHINE_NOT_FOUND', `no machine "${id}"`);
      return { resync: machine.inventory_seq !== inventory_seq, heartbeat_interval_ms: ctx.config.heartbeatIntervalMs, revoked: ctx.revocations.active() };
    });
  });

  // Where other machines hold these blobs, with pull tokens for them: an agent's pull-through mirror asks
  // before it takes a blob from the upstream registry.
  const blobSourcesFirst = { bodyLimit: 1024 * 1024, onRequest: machineFirst.onRequest };
  app.post<{ Params: { id: string } }>('/api/v1/machines/:id/blob-sources', blobSourcesFirst, async (request) => {
    const body = parseWith(blobSourcesRequestSchema, request.body);
    return blobSources(ctx.db, ctx.machines, request.params.id, body.digests, ctx.config.peerTokenTtlSeconds);
  });

  app.get('/api/v1/machines', async (request) => {
    await requireUser(ctx, request, CLUSTER_ROLES);
    return { machines: (await ctx.machines.list()).map(publicMachine) };
  });

  app.get<{ Params: { id: string } }>('/api/v1/machines/:id', async (request) => {
    await requireUser(ctx, request, CLUSTER_ROLES);
    return { machine: publicMachine(await ctx.machines.require(request.params.id)) };
  });

  // Revokes a machine: its secret dies with its record, so from the next request on it is refused by the
  // control plane (heartbeats, inventories, certificates, the token service) and it is never a source or
  // target again; its name may not join again.
  app.delete<{ Params: { id: string } }>('/api/v1/machines/:id', async (request) => {
    await requireUser(ctx, request, CLUSTER_ROLES);
    await ctx.machines.revoke(request.params.id);
    bodies.forget(request.params.id);
    return { revoked: { machine_id: request.params.id } };
  });
}
