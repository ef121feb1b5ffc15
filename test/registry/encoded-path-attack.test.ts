import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintPeerToken } from '../../src/control/peer-token.js';
import type { UploadGrant } from '../../src/control/wire.js';
import { digestHex } from '../../src/oci/digest.js';
import { MANIFEST_ACCEPT, MediaType } from '../../src/oci/media-types.js';
import { type Cluster, startCluster } from '../harness/cluster.js';
import { type TestImageInfo, makeImageTar, makeTestImage } from '../harness/images.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * Issue 13, defect 1, replayed against a real agent process: the scope check read the raw URL and the
 * handler the decoded one, so a percent-encoded slash slipped a request past the check.
 *   1. `PUT /v2/test/app/manifests%2F1` with the upload grant stowctl gets repointed test/app:1.
 *   2. `GET /v2/x/blobs/uploads%2F<uuid>` with a pull token read an upload's status.
 * Both must be refused (401, a challenge), and nothing may change.
 */

let cluster: Cluster;
let peerUrl: string;
let original: string;
let grant: string;
let pullToken: string;
let evil: TestImageInfo;
let evilDir: string;

const basic = (token: string) => `Basic ${Buffer.from(`stowage:${token}`).toString('base64')}`;

async function tagDigest(): Promise<string | undefined> {
  const res = await request(`${peerUrl}/v2/test/app/manifests/1`, { method: 'HEAD', headers: { authorization: basic(grant), accept: MANIFEST_ACCEPT } });
  await res.body.dump();
  return res.statusCode === 200 ? String(res.headers['docker-content-digest']) : undefined;
}

beforeAll(async () => {
  cluster = await startCluster({ agents: 1 });
  const agent = cluster.agents[0]!;
  peerUrl = agent.peerUrl;
  const { tar } = await makeImageTar('test/app:1', { layers: 1 });
  original = await cluster.loadImage('agent-1', tar, 'docker.io/test/app:1');
  // The attacker's image: its blobs uploaded with the grant (which the grant allows), ready to be tagged.
  evilDir = await tmpDir('stowage-evil-');
  evil = await makeTestImage(evilDir, { layers: 1, labels: { evil: 'yes' } });
  const pushed = await cluster.api<{ upload: UploadGrant | null }>('POST', '/api/v1/operations/push', { digest: evil.manifestDigest, size_bytes: 1, to: ['agent-1'] });
  expect(pushed.status).toBe(201);
  grant = pushed.body.upload!.password;
  for (const blob of [{ digest: evil.configDigest }, ...evil.layers]) {
    const bytes = await readFile(join(evilDir, 'blobs', 'sha256', digestHex(blob.digest)));
    const res = await request(`${peerUrl}/v2/test/app/blobs/uploads/?digest=${blob.digest}`, { method: 'POST', headers: { authorization: basic(grant) }, body: bytes });
    expect(res.statusCode).toBe(201);
    await res.body.dump();
  }
  const identity = JSON.parse(await readFile(join(agent.dataDir, 'identity.json'), 'utf8')) as { machine_id: string; machine_secret: string };
  pullToken = mintPeerToken(identity.machine_secret, { m: identity.machine_id, s: 'pull', exp: Math.floor(Date.now() / 1000) + 600 });
}, 90_000);

afterAll(async () => cluster?.close());

describe('one URL decoding for the scope check and the handler (issue 13 defect 1)', () => {
  it('an upload grant cannot repoint a tag through an encoded slash', async () => {
    expect(await tagDigest()).toBe(original);
    for (const path of ['/v2/test/app/manifests%2F1', '/v2/test%2Fapp%2Fmanifests%2F1', '/v2/test/app/manifests/1']) {
      const res = await request(`${peerUrl}${path}`, {
        method: 'PUT',
        headers: { authorization: basic(grant), 'content-type': MediaType.OciManifest },
        body: evil.manifestBytes,
      });
      const body = (await res.body.json()) as { errors: Array<{ code: string }> };
      expect({ path, status: res.statusCode, code: body.errors[0]?.code }).toEqual({ path, status: 401, code: 'UNAUTHORIZED' });
      expect(String(res.headers['www-authenticate'])).toMatch(/^Bearer realm=".*\/token",service="agent-1",scope="repository:test\/app:pull,push"/);
    }
    // Deleting the tag the same way is refused too.
    const del = await request(`${peerUrl}/v2/test/app/manifests%2F1`, { method: 'DELETE', headers: { authorization: basic(grant) } });
    await del.body.dump();
    expect(del.statusCode).toBe(401);
    // Nothing changed: the tag names the original image, and the attacker's manifest was never stored.
    expect(await tagDigest()).toBe(original);
    const byDigest = await request(`${peerUrl}/v2/test/app/manifests/${evil.manifestDigest}`, { method: 'HEAD', headers: { authorization: basic(grant) } });
    await byDigest.body.dump();
    expect(byDigest.statusCode).toBe(404);
    // The grant itself is good: what it allows (a manifest by digest) it still does.
    const allowed = await request(`${peerUrl}/v2/test/app/manifests/${evil.manifestDigest}`, {
      method: 'PUT',
      headers: { authorization: basic(grant), 'content-type': MediaType.OciManifest },
      body: evil.manifestBytes,
    });
    await allowed.body.dump();
    expect(allowed.statusCode).toBe(201);
    expect(await tagDigest()).toBe(original);
  });

  it('a pull token cannot read an upload through an encoded slash', async () => {
    const start = await request(`${peerUrl}/v2/x/blobs/uploads/`, { method: 'POST', headers: { authorization: basic(grant) } });
    await start.body.dump();
    expect(start.statusCode).toBe(202);
    const location = String(start.headers['location']);
    const uuid = location.split('/').pop()!;
    const patch = await request(`${peerUrl}${location}`, { method: 'PATCH', headers: { authorization: basic(grant), 'content-type': 'application/octet-stream' }, body: Buffer.alloc(10, 7) });
    await patch.body.dump();
    expect(patch.statusCode).toBe(202);

    for (const path of [`/v2/x/blobs/uploads%2F${uuid}`, `/v2/x%2Fblobs%2Fuploads%2F${uuid}`, `/v2/x/blobs/uploads/${uuid}`]) {
      const res = await request(`${peerUrl}${path}`, { headers: { authorization: basic(pullToken) } });
      const body = (await res.body.json()) as { errors: Array<{ code: string }> };
      expect({ path, status: res.statusCode, code: body.errors[0]?.code, range: res.headers['range'] }).toEqual({ path, status: 401, code: 'UNAUTHORIZED', range: undefined });
    }
    // The upload is as it was: 10 bytes in, still open for its owner.
    const status = await request(`${peerUrl}${location}`, { headers: { authorization: basic(grant) } });
    await status.body.dump();
    expect(status.statusCode).toBe(204);
    expect(status.headers['range']).toBe('0-9');
  });
});
