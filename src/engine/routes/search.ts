import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { StowageError } from '../../errors.js';
import type { EngineContext } from '../context.js';
import { strParam } from '../params.js';
import { decodeRegistryAuth, registryClientFor } from '../registry-auth.js';
import { sendError } from '../stream.js';

export interface SearchResult {
  name: string;
  description: string;
  star_count: number;
  is_official: boolean;
  is_automated: boolean;
}

const DEFAULT_LIMIT = 25;
/** Catalogs are paged; never read more than this many names from one registry for one search. */
const MAX_CATALOG_NAMES = 100_000;

interface SearchFilters {
  isAutomated?: boolean;
  isOfficial?: boolean;
  stars?: number;
}

/** Docker's filters: {"is-official":["true"]} or {"is-official":{"true":true}}. */
export function parseSearchFilters(raw: string | undefined): SearchFilters {
  const out: SearchFilters = {};
  if (raw === undefined || raw.trim() === '') return out;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (err) {
    throw new StowageError('BAD_REQUEST', `invalid filter: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new StowageError('BAD_REQUEST', 'invalid filter: expected a JSON object');
  for (const [key, value] of Object.entries(parsed as Record<string, unknown>)) {
    const values = Array.isArray(value) ? value.map(String) : typeof value === 'object' && value !== null ? Object.keys(value) : [String(value)];
    for (const v of values) {
      switch (key) {
        case 'is-automated':
        case 'is-official': {
          if (v !== 'true' && v !== 'false') throw new StowageError('BAD_REQUEST', `invalid filter '${key}=${v}'`);
          if (key === 'is-automated') out.isAutomated = v === 'true';
          else out.isOfficial = v === 'true';
          break;
        }
        case 'stars': {
          if (!/^-?\d+$/.test(v)) throw new StowageError('BAD_REQUEST', `invalid filter 'stars=${v}'`);
          out.stars = Math.max(out.stars ?? 0, Number(v));
          break;
        }
        default:
          throw new StowageError('BAD_REQUEST', `invalid filter '${key}'`);
      }
    }
  }
  return out;
}

export function parseSearchLimit(raw: string | undefined): number {
  if (raw === undefined || raw === '') return DEFAULT_LIMIT;
  if (!/^-?\d+$/.test(raw)) throw new StowageError('BAD_REQUEST', `invalid limit "${raw}": expected an integer`);
  const n = Number(raw);
  if (n < 1 || n > 100) throw new StowageError('BAD_REQUEST', `Limit ${n} is outside the range of [1, 100]`);
  return n;
}

/** "host:5000/team/app" -> searched only on host:5000 for "team/app"; "app" -> every search registry. */
export function splitSearchTerm(term: string): { host: string | undefined; remote: string } {
  const slash = term.indexOf('/');
  if (slash > 0) {
    const first = term.slice(0, slash);
    if (/[.:]/.test(first) || first === 'localhost') return { host: first.toLowerCase(), remote: term.slice(slash + 1) };
  }
  return { host: undefined, remote: term };
}

async function searchOne(ctx: EngineContext, host: string, term: string, auth: ReturnType<typeof decodeRegistryAuth>): Promise<string[]> {
  const client = registryClientFor(ctx, host, auth);
  const needle = term.toLowerCase();
  const names: string[] = [];
  let seen = 0;
  for await (const repo of client.catalog({ pageSize: 100 })) {
    if (++seen > MAX_CATALOG_NAMES) break;
    if (repo.toLowerCase().includes(needle)) names.push(`${host}/${repo}`);
  }
  return names;
}

async function handleSearch(request: FastifyRequest, reply: FastifyReply, ctx: EngineContext): Promise<FastifyReply> {
  const q = request.query as Record<string, unknown>;
  let limit: number;
  let filters: SearchFilters;
  let auth;
  try {
    limit = parseSearchLimit(strParam(q, 'limit'));
    filters = parseSearchFilters(strParam(q, 'filters'));
    auth = decodeRegistryAuth(request.headers['x-registry-auth']);
  } catch (err) {
    return sendError(reply, err);
  }
  const term = strParam(q, 'term') ?? '';
  const { host, remote } = splitSearchTerm(term);
  const hosts = host ? [host] : [...new Set(ctx.registries.searchRegistries.map((h) => h.toLowerCase()))];

  const settled = await Promise.allSettled(hosts.map((h) => searchOne(ctx, h, remote, auth)));
  const failures = settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (hosts.length > 0 && failures.length === hosts.length) {
    const first = failures[0]!.reason as Error;
    return sendError(reply, new StowageError('REGISTRY_ERROR', `Unexpected status from registry: ${first.message}`), 500);
  }
  if (failures.length > 0) request.log.warn({ failures: failures.map((f) => String(f.reason)) }, 'some search registries failed');

  let results: SearchResult[] = settled
    .flatMap((s) => (s.status === 'fulfilled' ? s.value : []))
    .map((name) => ({ name, description: '', star_count: 0, is_official: false, is_automated: false }));
  // Nothing here is official, automated or starred.
  if (filters.isOfficial === true || filters.isAutomated === true || (filters.stars ?? 0) > 0) results = [];
  return reply.code(200).header('content-type', 'application/json').send(Buffer.from(JSON.stringify(results.slice(0, limit))));
}

/** GET /images/search over the catalogs of the agent's search registries. */
export function registerSearchRoutes(app: FastifyInstance, ctx: EngineContext): void {
  app.get('/images/search', (request, reply) => handleSearch(request, reply, ctx));
}
