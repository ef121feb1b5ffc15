import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { StowageError } from '../../errors.js';
import type { Digest } from '../../oci/digest.js';
import type { Platform } from '../../oci/platform.js';
import type { EngineContext } from '../context.js';

export interface PullOutcome {
  /** The normalised reference that was pulled (tagged locally). */
  reference: string;
  /** What the reference points at now: a manifest or an index digest. */
  target: Digest;
  /** The platform manifest that was stored. */
  manifestDigest: Digest;
  /** False when everything was already present ("Image is up to date"). */
  downloaded: boolean;
}

/** Pull for a build step (FROM / COPY --from): progress goes into the build output. */
export async function pullForBuild(
  _ctx: EngineContext,
  name: string,
  _platform: Platform | undefined,
  _emit: (msg: Record<string, unknown>) => void,
  _registryConfig: string | string[] | undefined,
): Promise<PullOutcome> {
  throw new StowageError('UNSUPPORTED', `pulling ${name} is not available yet`);
}

export async function handlePull(_request: FastifyRequest, reply: FastifyReply, _ctx: EngineContext): Promise<FastifyReply> {
  return reply.code(501).send({ message: 'pull is not available yet' });
}

/** POST /images/create is owned by create.ts, which calls handlePull; nothing to register here. */
export function registerPullRoutes(_app: FastifyInstance, _ctx: EngineContext): void {}
