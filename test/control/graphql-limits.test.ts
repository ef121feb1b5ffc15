import { getIntrospectionQuery, printSchema } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createUser } from '../../src/control/auth/api-keys.js';
import { adminSchema } from '../../src/control/graphql/schema.js';
import { type CatalogPlane, startCatalogPlane } from './catalog-harness.js';

/** The schema is the issue's, and abusive queries are rejected before anything executes. */

let plane: CatalogPlane;
let root: string;

beforeAll(async () => {
  plane = await startCatalogPlane();
  root = await createApiKey(plane.ctx.db, (await createUser(plane.ctx.db, { name: 'root', role: 'superadmin' })).userId);
});
afterAll(async () => plane?.close());

/** Field lines of a type in printed SDL, whitespace-normalised. */
function fieldsOf(sdl: string, type: string): string[] {
  const m = new RegExp(`type ${type} \\{([^}]*)\\}`).exec(sdl);
  return (m?.[1] ?? '')
    .split('\n')
    .map((l) => l.trim().replace(/\s+/g, ' '))
    .filter((l) => l !== '' && !l.startsWith('"'));
}

describe('schema', () => {
  it('is Backend.AI\'s image schema, with Stowage\'s filters beside it', () => {
    const sdl = printSchema(adminSchema);
    expect(fieldsOf(sdl, 'KVPair')).toEqual(['key: String', 'value: String']);
    expect(fieldsOf(sdl, 'ResourceLimit')).toEqual(['key: String', 'min: String', 'max: String']);
    expect(fieldsOf(sdl, 'Image')).toEqual([
      'id: UUID',
      'name: String',
      'humanized_name: String',
      'tag: String',
      'registry: String',
      'architecture: String',
      'is_local: Boolean',
      'digest: String',
      'labels: [KVPair]',
      'aliases: [String]',
      'size_bytes: BigInt',
      'resource_limits: [ResourceLimit]',
      'supported_accelerators: [String]',
      'installed: Boolean',
      'installed_agents: [String]',
      'hash: String',
    ]);
    expect(fieldsOf(sdl, 'Query')).toEqual([
      'image(id: String, reference: String, architecture: String): Image',
      'images(is_installed: Boolean, is_operation: Boolean, domain: String, group: String, scaling_group: String): [Image]',
      'customized_images: [Image]',
    ]);
    expect(fieldsOf(sdl, 'Mutation')).toEqual([
      'rescan_images(registry: String, project: String): RescanImages',
      'preload_image(reference: String, references: [String], target_agents: [String]!): PreloadImage',
      'unload_image(reference: String, references: [String], target_agents: [String]!): UnloadImage',
      'forget_image(reference: String!, architecture: String): ForgetImage',
      'forget_image_by_id(image_id: String!): ForgetImageById',
      'purge_image_by_id(image_id: String!, options: PurgeImageOptions): PurgeImageById',
      'untag_image_from_registry(image_id: String!): UntagImageFromRegistry',
      'alias_image(alias: String!, target: String!, architecture: String): AliasImage',
      'dealias_image(alias: String!): DealiasImage',
    ]);
    expect(fieldsOf(sdl, 'RescanImages')).toEqual(['ok: Boolean', 'msg: String', 'task_id: UUID']);
    for (const t of ['PreloadImage', 'UnloadImage']) expect(fieldsOf(sdl, t)).toEqual(['ok: Boolean', 'msg: String', 'task_id: String']);
    for (const t of ['ForgetImage', 'ForgetImageById', 'UntagImageFromRegistry', 'AliasImage', 'DealiasImage']) expect(fieldsOf(sdl, t)).toEqual(['ok: Boolean', 'msg: String']);
    expect(fieldsOf(sdl, 'PurgeImageById')).toEqual(['image: Image']);
    expect(sdl).toContain('scalar BigInt');
    expect(sdl).toContain('scalar UUID');
  });

  it('serves the standard introspection query', async () => {
    const r = await plane.gql<{ __schema: { types: Array<{ name: string }> } }>(root, getIntrospectionQuery());
    expect(r.status).toBe(200);
    expect(r.body.errors).toBeUndefined();
    expect(r.body.data?.__schema.types.map((t) => t.name)).toContain('Image');
  });
});

describe('limits', () => {
  const rejected = async (query: string, code: string, pattern: RegExp) => {
    const before = (await plane.ctx.operations.list()).length;
    const r = await plane.gql(root, query);
    expect(r.status).toBe(400);
    expect(r.body.data).toBeUndefined();
    expect(r.body.errors?.[0]?.extensions?.code).toBe(code);
    expect(r.body.errors?.[0]?.message).toMatch(pattern);
    expect((await plane.ctx.operations.list()).length).toBe(before);
  };

  it('rejects a query nested too deep', async () => {
    let inner = 'name';
    for (let i = 0; i < 20; i++) inner = `ofType { ${inner} }`;
    await rejected(`{ __type(name: "Image") { fields { type { ${inner} } } } }`, 'QUERY_TOO_COMPLEX', /nests \d+ levels deep; at most 15/);
  });

  it('rejects too many aliases, even of a mutation that would have run', async () => {
    const many = Array.from({ length: 40 }, (_, i) => `a${i}: rescan_images(registry: "x") { ok }`).join(' ');
    await rejected(`mutation { ${many} }`, 'QUERY_TOO_COMPLEX', /40 aliases; at most 30/);
  });

  it('rejects a fragment bomb by counting, not walking', async () => {
    const frags = ['fragment F0 on Image { name tag digest registry }'];
    for (let i = 1; i <= 12; i++) frags.push(`fragment F${i} on Image { ...F${i - 1} ...F${i - 1} }`);
    await rejected(`{ images { ...F12 } } ${frags.join(' ')}`, 'QUERY_TOO_COMPLEX', /selects \d+ fields; at most 500/);
  });

  it('rejects an oversized query and too many tokens', async () => {
    await rejected(`{ images { name } } # ${'x'.repeat(20_000)}`, 'QUERY_TOO_COMPLEX', /bytes long; at most 16384/);
    await rejected(`{ images { ${'a '.repeat(3500)} } }`, 'QUERY_TOO_COMPLEX', /more tha[nt] 3000 tokens/);
  });

  it('rejects a body past the body limit with 400 QUERY_TOO_COMPLEX, in the GraphQL error shape', async () => {
    const before = (await plane.ctx.operations.list()).length;
    const r = await plane.gql(root, 'mutation { rescan_images(registry: "x") { ok } }', { pad: 'x'.repeat(100_000) });
    expect(r.status).toBe(400);
    expect(r.body).toEqual({ errors: [{ message: expect.stringMatching(/request body is larger than 65536 bytes/), extensions: { code: 'QUERY_TOO_COMPLEX' } }] });
    expect((await plane.ctx.operations.list()).length).toBe(before);
  });

  it('answers a body that is not JSON in the GraphQL error shape', async () => {
    const r = await plane.rest<{ errors?: Array<{ message: string; extensions: { code: string } }> }>(root, 'POST', '/admin/gql', '{"query": ');
    expect(r.status).toBe(400);
    expect(r.body.errors?.[0]?.extensions.code).toBe('BAD_REQUEST');
    expect(r.body.errors?.[0]?.message).toMatch(/\S/);
  });

  it('reports syntax and validation errors as Backend.AI does: HTTP 200 with errors and no data', async () => {
    const syntax = await plane.gql(root, '{ images { name }');
    expect(syntax.status).toBe(200);
    expect(syntax.body.data).toBeUndefined();
    expect(syntax.body.errors?.[0]?.extensions?.code).toBe('GRAPHQL_PARSE_FAILED');
    const unknown = await plane.gql(root, '{ images { nope } }');
    expect(unknown.status).toBe(200);
    expect(unknown.body.data).toBeUndefined();
    expect(unknown.body.errors?.[0]?.extensions?.code).toBe('GRAPHQL_VALIDATION_FAILED');
  });
});
