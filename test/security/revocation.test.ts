import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { UploadGrant } from '../../src/control/wire.js';
import { type Cluster, startCluster, until } from '../harness/cluster.js';
import { makeImageTar, makeTestImage } from '../harness/images.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * Issue 13: tokens are revocable. An API key, the registry tokens already issued for it, an ended
 * operation's upload grant and a revoked machine are each refused from the very next request, on the
 * control plane and on the agent (which checks tokens on its own), against real processes.
 */

let cluster: Cluster;

const basic = (password: string) => `Basic ${Buffer.from(`u:${password}`).toString('base64')}`;

async function status(url: string, headers: Record<string, string>, method: 'GET' | 'HEAD' | 'POST' = 'GET', body?: unknown): Promise<number> {
  const res = await request(url, {
    method,
    headers: { ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    headersTimeout: 60_000,
  });
  await res.body.dump();
  return res.statusCode;
}

beforeAll(async () => {
  cluster = await startCluster({ agents: 1 });
  const { tar } = await makeImageTar('test/app:1', { layers: 1 });
  await cluster.loadImage('agent-1', tar, 'docker.io/test/app:1');
}, 240_000);

afterAll(async () => {
  await cluster?.close();
});

describe('revocation', () => {
  it('an API key and the registry tokens issued for it are refused from the next request on (stowctl api-key revoke)', async () => {
    const created = await cluster.api<{ api_key: string }>('POST', '/api/v1/admin/users', { name: 'bob', role: 'superadmin' });
    expect(created.status).toBe(200);
    const key = created.body.api_key;
    const peer = cluster.agents[0]!.peerUrl;
    const tokenUrl = `${cluster.controlUrl}/token?service=agent-1&scope=${encodeURIComponent('repository:test/app:pull')}`;
    const issued = await request(tokenUrl, { headers: { authorization: basic(key) } });
    expect(issued.statusCode).toBe(200);
    const { token } = (await issued.body.json()) as { token: string };
    const manifest = `${peer}/v2/test/app/manifests/1`;
    const accept = { accept: 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' };

    // Before: the key works on the control plane, its token on the agent.
    expect(await status(`${cluster.controlUrl}/api/v1/whoami`, { authorization: `Bearer ${key}` })).toBe(200);
    expect(await status(manifest, { authorization: `Bearer ${token}`, ...accept }, 'HEAD')).toBe(200);

    const revoked = await cluster.stowctl(['api-key', 'revoke', key]);
    expect(revoked.stderr).toBe('');
    expect(revoked.code).toBe(0);
    expect(revoked.stdout).toMatch(/^API key [0-9a-f]{16} revoked\n$/);

    // At once, everywhere: the key on the REST API and the token service, the token already issued on the agent.
    expect(await status(`${cluster.controlUrl}/api/v1/whoami`, { authorization: `Bearer ${key}` })).toBe(401);
    expect(await status(tokenUrl, { authorization: basic(key) })).toBe(401);
    expect(await status(manifest, { authorization: `Bearer ${token}`, ...accept }, 'HEAD')).toBe(401);
    // Nobody else is touched: the operator's key and a token issued to it still work.
    expect(await status(`${cluster.controlUrl}/api/v1/whoami`, { authorization: `Bearer ${cluster.adminToken}` })).toBe(200);
    const other = (await (await request(tokenUrl, { headers: { authorization: basic(cluster.adminToken) } })).body.json()) as { token: string };
    expect(await status(manifest, { authorization: `Bearer ${other.token}`, ...accept }, 'HEAD')).toBe(200);
    // Revoking it again finds no such key.
    expect((await cluster.stowctl(['api-key', 'revoke', key])).code).not.toBe(0);
  }, 120_000);

  it('ending an operation revokes its upload grant on the agent', async () => {
    const dir = await tmpDir('stowage-revoke-push-');
    const image = await makeTestImage(dir, { layers: 1 });
    const pushed = await cluster.api<{ operation: { id: string }; upload: UploadGrant | null }>('POST', '/api/v1/operations/push', {
      digest: image.manifestDigest,
      size_bytes: 4096,
      to: ['agent-1'],
    });
    expect(pushed.status).toBe(201);
    const grant = pushed.body.upload!;
    const uploads = `${cluster.agents[0]!.peerUrl}/v2/${grant.repository}/blobs/uploads/`;
    expect(await status(uploads, { authorization: basic(grant.password) }, 'POST')).toBe(202);

    const cancelled = await cluster.api('POST', `/api/v1/operations/${pushed.body.operation.id}/cancel`);
    expect(cancelled.status).toBe(200);
    expect(await status(uploads, { authorization: basic(grant.password) }, 'POST')).toBe(401);
  }, 120_000);

  it('an agent that was down when a key was revoked refuses its tokens once back, across a control-plane restart too', async () => {
    const created = await cluster.api<{ api_key: string }>('POST', '/api/v1/admin/users', { name: 'carol', role: 'superadmin' });
    const key = created.body.api_key;
    const tokenUrl = `${cluster.controlUrl}/token?service=agent-1&scope=${encodeURIComponent('repository:test/app:pull')}`;
    const { token } = (await (await request(tokenUrl, { headers: { authorization: basic(key) } })).body.json()) as { token: string };
    await cluster.killAgent('agent-1');
    const revoked = await cluster.stowctl(['api-key', 'revoke', key]);
    expect(revoked.code).toBe(0);
    // Neither process remembers it from memory now: the control plane kept it in its database.
    await cluster.killControl();
    await cluster.startControl();
    const agent = await cluster.startAgent('agent-1');
    const manifest = `${agent.peerUrl}/v2/test/app/manifests/1`;
    const accept = { accept: 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' };
    await until('the restarted agent to refuse the revoked token', async () => ((await status(manifest, { authorization: `Bearer ${token}`, ...accept }, 'HEAD')) === 401 ? true : undefined));
    const other = (await (await request(tokenUrl, { headers: { authorization: basic(cluster.adminToken) } })).body.json()) as { token: string };
    expect(await status(manifest, { authorization: `Bearer ${other.token}`, ...accept }, 'HEAD')).toBe(200);
  }, 240_000);

  it('refuses a revocation that is malformed, of an unknown key or machine, or not the caller\'s to make, changing nothing', async () => {
    expect((await cluster.api('PUT', '/api/v1/admin/domains/lab', { allowed_registries: [] })).status).toBe(200);
    const made = await cluster.api<{ api_key: string }>('POST', '/api/v1/admin/users', { name: 'erin', role: 'user', domain: 'lab' });
    expect(made.status).toBe(200);
    const erin = made.body.api_key;
    const whoami = `${cluster.controlUrl}/api/v1/whoami`;
    const revoke = (authorization: string, body: unknown) => status(`${cluster.controlUrl}/api/v1/api-keys/revoke`, { authorization }, 'POST', body);
    const revokeMachine = (authorization: string, id: string) =>
      request(`${cluster.controlUrl}/api/v1/machines/${encodeURIComponent(id)}`, { method: 'DELETE', headers: { authorization } }).then(async (r) => {
        await r.body.dump();
        return r.statusCode;
      });

    expect(await revoke(`Bearer ${cluster.adminToken}`, {})).toBe(400);
    expect(await revoke(`Bearer ${cluster.adminToken}`, { key: 'f'.repeat(16) })).toBe(404);
    // A user may revoke only their own key: the operator's stays good.
    expect(await revoke(`Bearer ${erin}`, { key: cluster.adminToken })).toBe(403);
    expect(await revoke('Bearer stk_not-a-key', { key: erin })).toBe(401);
    expect(await status(whoami, { authorization: `Bearer ${cluster.adminToken}` })).toBe(200);
    expect(await status(whoami, { authorization: `Bearer ${erin}` })).toBe(200);
    // Machines are the operator's to revoke; an unknown one is not found.
    expect(await revokeMachine(`Bearer ${erin}`, 'agent-1')).toBe(403);
    expect(await revokeMachine(`Bearer ${cluster.adminToken}`, 'nowhere')).toBe(404);
    const machines = await cluster.api<{ machines: Array<{ id: string }> }>('GET', '/api/v1/machines');
    expect(machines.body.machines.map((m) => m.id)).toContain('agent-1');
  }, 120_000);

  it('a revoked machine is refused at once and may not join again under its name (stowctl machine revoke)', async () => {
    const agent = cluster.agents[0]!;
    const identity = await until('the agent identity', async () => {
      const i = JSON.parse(await readFile(join(agent.dataDir, 'identity.json'), 'utf8')) as { machine_secret?: string };
      return i.machine_secret;
    });
    const heartbeat = `${cluster.controlUrl}/api/v1/machines/agent-1/heartbeat`;
    expect(await status(heartbeat, { authorization: `Bearer ${identity}` }, 'POST', { inventory_seq: 0 })).toBe(200);

    const revoked = await cluster.stowctl(['machine', 'revoke', 'agent-1']);
    expect(revoked.stderr).toBe('');
    expect(revoked.stdout).toBe('machine agent-1 revoked\n');

    expect(await status(heartbeat, { authorization: `Bearer ${identity}` }, 'POST', { inventory_seq: 0 })).toBe(401);
    const machines = await cluster.api<{ machines: Array<{ id: string }> }>('GET', '/api/v1/machines');
    expect(machines.body.machines.map((m) => m.id)).not.toContain('agent-1');
    const tokenUrl = `${cluster.controlUrl}/token?service=agent-1&scope=${encodeURIComponent('repository:test/app:pull')}`;
    expect(await status(tokenUrl, { authorization: basic(cluster.adminToken) })).toBe(400);
    // Joining again under the name, even with the join token, is refused.
    const rejoin = await request(`${cluster.controlUrl}/api/v1/machines/join`, {
      method: 'POST',
      headers: { authorization: `Bearer ${cluster.joinToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ join_token: cluster.joinToken, name: 'agent-1', agent_url: agent.peerUrl, platform: 'linux/amd64', labels: {}, inventory: [], inventory_seq: 1 }),
    });
    const body = (await rejoin.body.json()) as { error: { code: string; message: string } };
    expect({ status: rejoin.statusCode, code: body.error.code }).toEqual({ status: 403, code: 'FORBIDDEN' });
    expect(body.error.message).toMatch(/revoked/);
  }, 120_000);
});
