import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseControlConfig } from '../../src/control/config.js';
import { type RunningControl, startControl } from '../../src/control/control.js';
import type { Machine } from '../../src/control/wire.js';
import { controlDatabase } from '../harness/postgres.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * POST /api/v1/machines/:id/heartbeat over HTTP: the control plane keeps each machine's last body to skip
 * parsing an equal one again, so what each answer and the machine record show must follow every body sent.
 */

let control: RunningControl;

async function send(path: string, token: string, body?: string) {
  const res = await request(`${control.url}${path}`, {
    method: body === undefined ? 'DELETE' : 'POST',
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body }),
  });
  const text = await res.body.text();
  return { status: res.statusCode, body: (text ? JSON.parse(text) : undefined) as { resync?: boolean; error?: { code: string } } };
}

async function machine(): Promise<Machine> {
  const res = await request(`${control.url}/api/v1/machines/m1`, { headers: { authorization: `Bearer ${control.adminToken}` } });
  return ((await res.body.json()) as { machine: Machine }).machine;
}

beforeAll(async () => {
  control = await startControl(parseControlConfig({ dataDir: await tmpDir('stowage-heartbeat-'), ...(await controlDatabase()), listen: { port: 0 } }));
});

afterAll(async () => {
  await control?.close();
});

describe('heartbeat route', () => {
  it('follows every body an agent sends, equal or not, and refuses a bad one or a bad secret whatever came before', async () => {
    const join = { join_token: control.joinToken, name: 'm1', agent_url: 'http://127.0.0.1:1', platform: 'linux/amd64', inventory: [], inventory_seq: 1 };
    const joined = await request(`${control.url}/api/v1/machines/join`, {
      method: 'POST',
      headers: { authorization: `Bearer ${control.joinToken}`, 'content-type': 'application/json' },
      body: JSON.stringify(join),
    });
    expect(joined.statusCode).toBe(201);
    const secret = ((await joined.body.json()) as { machine_secret: string }).machine_secret;
    const path = '/api/v1/machines/m1/heartbeat';
    const a = JSON.stringify({ agent_url: 'http://127.0.0.1:1', platform: 'linux/amd64', labels: { zone: 'a' }, inventory_seq: 1, disk_used_bytes: 1 });
    const b = JSON.stringify({ agent_url: 'http://127.0.0.1:1', platform: 'linux/amd64', labels: { zone: 'b' }, inventory_seq: 2, disk_used_bytes: 2 });

    for (const [body, resync, zone, disk] of [[a, false, 'a', 1], [a, false, 'a', 1], [b, true, 'b', 2], [a, false, 'a', 1]] as const) {
      expect(await send(path, secret, body)).toEqual({ status: 200, body: expect.objectContaining({ resync }) });
      expect(await machine()).toMatchObject({ labels: { zone }, disk_used_bytes: disk });
    }

    // Not JSON, prototype poisoning, outside the schema: 400, and the machine keeps what it had.
    for (const bad of ['{"inventory_seq": ', '{"inventory_seq": 1, "__proto__": {"x": 1}}', JSON.stringify({ inventory_seq: -1 }), '']) {
      expect((await send(path, secret, bad)).status, bad).toBe(400);
    }
    expect(await machine()).toMatchObject({ labels: { zone: 'a' }, disk_used_bytes: 1 });

    // The body the control plane knows does not stand in for the secret.
    expect(await send(path, 'sms_wrong', a)).toMatchObject({ status: 401 });
    expect((await send('/api/v1/machines/m1', control.adminToken)).status).toBe(200);
    expect(await send(path, secret, a)).toMatchObject({ status: 401 });
  });
});
