import type { FastifyRequest } from 'fastify';
import { StowageError } from '../../errors.js';
import { type Principal, type Role, authenticateApiKey, bearerToken } from '../auth/api-keys.js';
import type { ControlContext } from '../context.js';
import type { MachineRecord } from '../machines.js';

/** The calling user; 401 without a valid API key, 403 when the role is not among `roles`. */
export async function requireUser(ctx: ControlContext, request: FastifyRequest, roles?: readonly Role[]): Promise<Principal> {
  const token = bearerToken(request.headers.authorization);
  const principal = token === undefined ? undefined : await authenticateApiKey(ctx.db, token);
  if (!principal) throw new StowageError('UNAUTHORIZED', 'a valid API token is required (Authorization: Bearer stk_…)');
  if (roles && !roles.includes(principal.role)) {
    throw new StowageError('FORBIDDEN', `${principal.name} (${principal.role}) may not do this; it needs ${roles.join(' or ')}`);
  }
  return principal;
}

/** That the caller is the agent `machineId`, by the secret it got at join, reading nothing else; 401 otherwise. */
export async function requireMachineSecret(ctx: ControlContext, request: FastifyRequest, machineId: string): Promise<void> {
  if (!(await ctx.machines.hasSecret(machineId, bearerToken(request.headers.authorization)))) {
    throw new StowageError('UNAUTHORIZED', `not authenticated as machine "${machineId}"`);
  }
}

/** The calling agent, authenticated by the secret it got at join; 401 otherwise. */
export async function requireMachine(ctx: ControlContext, request: FastifyRequest, machineId: string): Promise<MachineRecord> {
  const machine = await ctx.machines.authenticate(machineId, bearerToken(request.headers.authorization));
  if (!machine) throw new StowageError('UNAUTHORIZED', `not authenticated as machine "${machineId}"`);
  return machine;
}

/**
 * The cluster API (machines, availability, push, distribute, every operation) spans all domains, so it is
 * the superadmin's; admins and users are scoped to a domain and work through GraphQL, which filters.
 */
export const CLUSTER_ROLES: readonly Role[] = ['superadmin'];

/** One operation (and its events) is visible to the superadmin and to whoever started it. */
export function canSeeOperation(principal: Principal, actor: string): boolean {
  return principal.role === 'superadmin' || principal.name === actor;
}
