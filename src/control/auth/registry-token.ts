import type { Db } from '../db/database.js';
import type { MachineRecord } from '../machines.js';
import { type AccessGrant, type PeerTokenPayload, isPeerToken, mintPeerToken, verifyPeerToken } from '../peer-token.js';
import { TenancyStore } from '../tenancy/store.js';
import { type Principal, authenticateApiKey } from './api-keys.js';

/**
 * The registry token service (the Docker/OCI token flow) for the agents' /v2/. An agent answers a 401
 * with `Bearer realm="<control plane>/token",service="<machine id>",scope="repository:<name>:<actions>"`;
 * the client asks this service with Basic credentials (any username, an API key as the password) and gets
 * a token for that machine, minted with the machine's secret like a peer token, so the agent checks it on
 * its own. The token names what it grants per repository (see AccessGrant); what is not granted is left
 * out, as the token spec does, and the agent refuses it.
 *
 * Who gets what, on a machine:
 *   superadmin  pull, push (tags too) and delete on every machine;
 *   admin       the same on machines whose scaling group a group of their domain allows;
 *   user        pull on machines whose scaling group one of their groups allows.
 * The catalog (`registry:catalog:*`) goes with pull. A peer token of that machine presented as the password
 * (a stowctl upload grant) is handed back as it is: peer tokens keep working through the standard flow.
 */

export type RegistryAction = 'pull' | 'push' | 'delete' | '*';

/** One scope of a token request: `repository:team/app:pull,push` or `registry:catalog:*`. */
export interface RequestedScope {
  type: 'repository' | 'registry';
  name: string;
  actions: string[];
}

const MAX_SCOPES = 32;

/** Parses the scope parameters (repeated and/or space-separated); malformed ones are dropped, as registries do. */
export function parseScopes(values: readonly string[]): RequestedScope[] {
  const out: RequestedScope[] = [];
  for (const value of values) {
    for (const item of value.split(' ')) {
      if (item === '' || out.length >= MAX_SCOPES || item.length > 512) continue;
      const first = item.indexOf(':');
      const last = item.lastIndexOf(':');
      if (first <= 0 || last === first) continue;
      const type = item.slice(0, first);
      if (type !== 'repository' && type !== 'registry') continue;
      const name = item.slice(first + 1, last);
      const actions = item.slice(last + 1).split(',').filter((a) => a !== '');
      if (name === '' || actions.length === 0) continue;
      out.push({ type, name, actions });
    }
  }
  return out;
}

/** Whether the principal may use this machine at all (see the table above). */
export async function mayUseMachine(tenancy: TenancyStore, principal: Principal, machine: MachineRecord): Promise<boolean> {
  if (principal.role === 'superadmin') return true;
  const sg = machine.scaling_group;
  if (sg === null) return false;
  const groups = principal.role === 'admin' ? (principal.domain ? await tenancy.groupsIn(principal.domain) : []) : await tenancy.groupsOf(principal.userId);
  return groups.some((g) => g.allowed_scaling_groups.includes(sg));
}

/** The actions of each requested scope the principal gets on the machine; scopes granting nothing are left out. */
export async function grantFor(
  tenancy: TenancyStore,
  principal: Principal,
  machine: MachineRecord,
  scopes: readonly RequestedScope[],
): Promise<AccessGrant[]> {
  if (!(await mayUseMachine(tenancy, principal, machine))) return [];
  const writer = principal.role === 'superadmin' || principal.role === 'admin';
  const out: AccessGrant[] = [];
  for (const s of scopes) {
    if (s.type === 'registry') {
      if (s.name === 'catalog' && s.actions.includes('*')) out.push({ type: 'registry', name: 'catalog', actions: ['*'] });
      continue;
    }
    const wanted = s.actions.includes('*') ? ['pull', 'push', 'delete'] : s.actions;
    const actions = [...new Set(wanted.filter((a) => a === 'pull' || ((a === 'push' || a === 'delete') && writer)))];
    if (actions.length > 0) out.push({ type: 'repository', name: s.name, actions });
  }
  return out;
}

export type TokenOutcome =
  | { kind: 'token'; token: string; expiresIn: number; issuedAt: string }
  | { kind: 'unauthenticated' }
  | { kind: 'unknown-service' };

/** Everything a token request carries, already taken apart. */
export interface TokenRequest {
  service: string | undefined;
  scopes: RequestedScope[];
  /** The password of the Basic credentials: an API key, or a peer token of the service's machine. */
  password: string | undefined;
}

/** Issues a token for one request (see the module comment). */
export async function issueRegistryToken(
  db: Db,
  machineById: (id: string) => Promise<MachineRecord | undefined>,
  req: TokenRequest,
  ttlSeconds: number,
  now = Date.now(),
): Promise<TokenOutcome> {
  if (req.password === undefined) return { kind: 'unauthenticated' };
  const machine = req.service === undefined ? undefined : await machineById(req.service);
  if (isPeerToken(req.password)) {
    // Checked here as the agent will check it: only a genuine, unexpired token of this very machine.
    if (!machine) return { kind: 'unknown-service' };
    const payload = verifyPeerToken(machine.secret, machine.id, req.password, 'pull', now);
    if (!payload) return { kind: 'unauthenticated' };
    return { kind: 'token', token: req.password, expiresIn: Math.max(1, payload.exp - Math.floor(now / 1000)), issuedAt: new Date(now).toISOString() };
  }
  const principal = await authenticateApiKey(db, req.password);
  if (!principal) return { kind: 'unauthenticated' };
  if (!machine) return { kind: 'unknown-service' };
  const acc = await grantFor(new TenancyStore(db), principal, machine, req.scopes);
  const writes = acc.some((g) => g.actions.includes('push') || g.actions.includes('delete'));
  const payload: PeerTokenPayload = { m: machine.id, s: writes ? 'push' : 'pull', exp: Math.floor(now / 1000) + ttlSeconds, acc, sub: principal.name };
  // Named by its key, so revoking the key revokes this token on the agents too.
  if (principal.keyId) payload.kid = principal.keyId;
  // Whoever may push to a repository may point its tags, as on any registry; acc still bounds where.
  if (writes) payload.t = true;
  return { kind: 'token', token: mintPeerToken(machine.secret, payload), expiresIn: ttlSeconds, issuedAt: new Date(now).toISOString() };
}
