import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createUser } from '../../src/control/auth/api-keys.js';
import { type CatalogPlane, startCatalogPlane } from './catalog-harness.js';

/**
 * Bad input to /admin/gql is the caller's mistake: variables of the wrong type and list values nested
 * past the bound answer GraphQL errors with a code (HTTP 200, as Backend.AI; 400 QUERY_TOO_COMPLEX for a
 * literal past the bound), never INTERNAL, and nothing is logged at error level.
 */

let plane: CatalogPlane;
let root: string;
const logged: unknown[] = [];

beforeAll(async () => {
  plane = await startCatalogPlane();
  root = await createApiKey(plane.ctx.db, (await createUser(plane.ctx.db, { name: 'root', role: 'superadmin' })).userId);
  // Error-level logs are what an operator is paged for: count them (the real logger still writes).
  const log = plane.ctx.log;
  const error = log.error.bind(log);
  log.error = ((...args: Parameters<typeof error>) => {
    logged.push(args);
    error(...args);
  }) as typeof log.error;
});
afterAll(async () => plane?.close());

describe('bad GraphQL input', () => {
  it('a variable of the wrong type is BAD_USER_INPUT with graphql\'s message', async () => {
    for (const value of ['yes', 3, { a: 1 }, ['x']]) {
      const r = await plane.gql(root, 'query($i: Boolean) { images(is_installed: $i) { name } }', { i: value });
      expect(r.status).toBe(200);
      expect(r.body.data).toBeUndefined();
      expect(r.body.errors?.[0]?.extensions?.code, JSON.stringify(value)).toBe('BAD_USER_INPUT');
      expect(r.body.errors?.[0]?.message).toMatch(/Variable "\$i"/);
    }
    const missing = await plane.gql(root, 'mutation($t: [String]!) { preload_image(reference: "x", target_agents: $t) { ok } }', {});
    expect(missing.body.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    expect(logged).toEqual([]);
  });

  it('variables nested past the bound are BAD_USER_INPUT, however deep', async () => {
    for (const depth of [40, 5_000, 30_000]) {
      // Written by hand: JSON.stringify itself recurses, and the point is a body no client library would build.
      const body = `{"query": "mutation($t: [String]!) { preload_image(reference: \\"x\\", target_agents: $t) { ok } }", "variables": {"t": ${'['.repeat(depth)}"a"${']'.repeat(depth)}}}`;
      const r = await plane.rest<{ errors?: Array<{ message: string; extensions?: { code?: string } }> }>(root, 'POST', '/admin/gql', body);
      expect(r.status).toBe(200);
      expect(r.body.errors?.[0]?.extensions?.code, `depth ${depth}`).toBe('BAD_USER_INPUT');
      expect(r.body.errors?.[0]?.message).toMatch(/more than 32 levels/);
    }
    expect((await plane.ctx.operations.list()).length).toBe(0);
    expect(logged).toEqual([]);
  });

  it('list literals nested past the bound are QUERY_TOO_COMPLEX; under it, a validation error', async () => {
    const deep = await plane.gql(root, `{ images(domain: ${'['.repeat(1_400)}"x"${']'.repeat(1_400)}) { name } }`);
    expect(deep.status).toBe(400);
    expect(deep.body.errors?.[0]?.extensions?.code).toBe('QUERY_TOO_COMPLEX');
    expect(deep.body.errors?.[0]?.message).toMatch(/list or object values 1400 levels deep; at most 32/);
    const shallow = await plane.gql(root, `{ images(domain: ${'['.repeat(10)}"x"${']'.repeat(10)}) { name } }`);
    expect(shallow.status).toBe(200);
    expect(shallow.body.errors?.[0]?.extensions?.code).toBe('GRAPHQL_VALIDATION_FAILED');
    expect(logged).toEqual([]);
  });
});
