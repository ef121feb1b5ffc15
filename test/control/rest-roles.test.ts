import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createUser } from '../../src/control/auth/api-keys.js';
import { parseControlConfig } from '../../src/control/config.js';
import { type RunningControl, startControl } from '../../src/control/control.js';
import { controlDatabase } from '../harness/postgres.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * The cluster REST API spans every domain, so only the superadmin uses it; a domain's admin or user is
 * refused (403), and sees none of the operations of others, not even whether they exist.
 */

let control: RunningControl;
const keys: Record<string, string> = {};
let theirs: string;

async function call(token: string, method: 'GET' | 'POST', path: string, body?: unknown) {
  const res = await request(`${control.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.body.text();
  return { status: res.statusCode, body: (text ? JSON.parse(text) : undefined) as { error?: { code: string } } };
}

beforeAll(async () => {
  control = await startControl(parseControlConfig({ dataDir: await tmpDir('stowage-roles-'), ...(await controlDatabase()), listen: { port: 0 } }));
  const db = control.ctx.db;
  keys['admin'] = await createApiKey(db, (await createUser(db, { name: 'dom-admin', role: 'admin', domain: 'research' })).userId);
  keys['user'] = await createApiKey(db, (await createUser(db, { name: 'dom-user', role: 'user', domain: 'research' })).userId);
  theirs = (await control.ctx.operations.create({
    kind: 'rescan',
    actor: 'admin',
    artifact: { digest: null, reference: null, platform: null, size_bytes: null },
    targets: [],
  })).id;
  await control.ctx.operations.finish(theirs, { status: 'succeeded' });
});

afterAll(async () => {
  await control?.close();
});

describe('cluster REST roles', () => {
  const digest = `sha256:${'a'.repeat(64)}`;
  const refused: Array<[string, 'GET' | 'POST', string, unknown?]> = [
    ['machine list', 'GET', '/api/v1/machines'],
    ['status', 'GET', '/api/v1/images/status'],
    ['inspect', 'GET', `/api/v1/images/inspect?digest=${digest}`],
    ['operation list', 'GET', '/api/v1/operations'],
    ['distribute', 'POST', '/api/v1/operations/distribute', { digest, from: 'a', to: ['b'] }],
    ['push', 'POST', '/api/v1/operations/push', { digest, size_bytes: 1, to: ['b'] }],
  ];

  for (const role of ['admin', 'user'] as const) {
    it(`refuses a domain ${role} with 403 and records nothing`, async () => {
      const before = (await control.ctx.operations.list({ limit: 1000 })).length;
      for (const [what, method, path, body] of refused) {
        const r = await call(keys[role]!, method, path, body);
        expect(r.status, what).toBe(403);
        expect(r.body.error?.code, what).toBe('FORBIDDEN');
      }
      expect(await control.ctx.operations.list({ limit: 1000 })).toHaveLength(before);
      // Someone else's operation and its events are not there for them.
      expect((await call(keys[role]!, 'GET', `/api/v1/operations/${theirs}`)).status).toBe(404);
      expect((await call(keys[role]!, 'GET', `/api/v1/operations/${theirs}/events`)).status).toBe(404);
      expect((await call(keys[role]!, 'GET', `/events/background-task?task_id=${theirs}`)).status).toBe(404);
    });
  }

  it('lets the superadmin see it all', async () => {
    expect((await call(control.adminToken, 'GET', '/api/v1/machines')).status).toBe(200);
    expect((await call(control.adminToken, 'GET', `/api/v1/operations/${theirs}`)).status).toBe(200);
  });

  it('refuses a join without the join token as bearer, before reading the body, and records no machine', async () => {
    const body = { join_token: control.joinToken, agent_url: 'http://127.0.0.1:1', platform: 'linux/amd64', inventory: [], inventory_seq: 1 };
    for (const authorization of [undefined, 'Bearer sjt_wrong', `Bearer ${control.adminToken}`]) {
      const res = await request(`${control.url}/api/v1/machines/join`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) },
        body: JSON.stringify(body),
      });
      expect(res.statusCode, authorization).toBe(401);
      expect(((await res.body.json()) as { error: { code: string } }).error.code).toBe('UNAUTHORIZED');
    }
    expect(await control.ctx.machines.list()).toEqual([]);
  });

  it('refuses a push to an unknown machine or with a digest other than the expected one, recording nothing', async () => {
    const before = (await control.ctx.operations.list({ limit: 1000 })).length;
    const unknown = await call(control.adminToken, 'POST', '/api/v1/operations/push', { digest, size_bytes: 1, to: ['nowhere'] });
    expect([unknown.status, unknown.body.error?.code]).toEqual([404, 'MACHINE_NOT_FOUND']);
    const mismatch = await call(control.adminToken, 'POST', '/api/v1/operations/push', {
      digest,
      size_bytes: 1,
      to: ['nowhere'],
      expected_digest: `sha256:${'b'.repeat(64)}`,
    });
    expect([mismatch.status, mismatch.body.error?.code]).toEqual([400, 'DIGEST_MISMATCH']);
    const malformed = await call(control.adminToken, 'POST', '/api/v1/operations/push', { digest: 'sha256:xyz', size_bytes: 1, to: ['a'] });
    expect([malformed.status, malformed.body.error?.code]).toEqual([400, 'BAD_REQUEST']);
    expect(await control.ctx.operations.list({ limit: 1000 })).toHaveLength(before);
  });
});
