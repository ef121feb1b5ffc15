import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { UploadGrant } from '../../src/control/wire.js';
import { type Cluster, startCluster } from '../harness/cluster.js';
import { type TestImageInfo, makeImageTar, makeTestImage, skopeo } from '../harness/images.js';
import { run, runOk } from '../harness/run.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * Standard registry authentication on a joined agent: the Docker/OCI token flow against the control
 * plane's /token, with real clients (skopeo, and the docker CLI through an agent's Docker API), on real
 * processes. Who gets what: see src/control/auth/registry-token.ts.
 */

let cluster: Cluster;
const keys: Record<string, string> = {};
let layoutDir: string;
let image: TestImageInfo;
let host: string; // agent-1's /v2/ as host:port

const docker = (dockerConfig: string, args: string[]) => run('docker', args, { DOCKER_HOST: cluster.agents[1]!.dockerHost, DOCKER_CONFIG: dockerConfig });

beforeAll(async () => {
  cluster = await startCluster({
    agents: 2,
    control: {
      seed: {
        domains: [
          { name: 'ci', allowed_registries: [] },
          { name: 'other', allowed_registries: [] },
        ],
        groups: [
          { domain: 'ci', name: 'builders', allowed_scaling_groups: ['default'] },
          { domain: 'other', name: 'gpu-users', allowed_scaling_groups: ['gpu'] },
        ],
        users: [
          { name: 'ci-admin', role: 'admin', domain: 'ci', groups: ['builders'] },
          { name: 'ci-user', role: 'user', domain: 'ci', groups: ['builders'] },
          { name: 'other-admin', role: 'admin', domain: 'other', groups: ['gpu-users'] },
        ],
      },
    },
  });
  for (const name of ['ci-admin', 'ci-user', 'other-admin']) keys[name] = (await readFile(join(cluster.root, 'control', 'tokens', `${name}.token`), 'utf8')).trim();
  host = new URL(cluster.agents[0]!.peerUrl).host;
  layoutDir = await tmpDir('stowage-token-img-');
  image = await makeTestImage(layoutDir, { layers: 2, tag: 'x' });
}, 90_000);

afterAll(async () => cluster?.close());

async function tokenFor(user: string, scope: string): Promise<{ status: number; token?: string }> {
  const url = `${cluster.controlUrl}/token?service=agent-1&scope=${encodeURIComponent(scope)}`;
  const res = await request(url, { headers: { authorization: `Basic ${Buffer.from(`${user}:${keys[user] ?? 'stk_wrong'}`).toString('base64')}` } });
  const body = (await res.body.json()) as { token?: string };
  return { status: res.statusCode, ...(body.token ? { token: body.token } : {}) };
}

describe('the token flow on a joined agent', () => {
  it('/v2/ points a client at the control plane token service', async () => {
    const res = await request(`${cluster.agents[0]!.peerUrl}/v2/`);
    await res.body.dump();
    expect(res.statusCode).toBe(401);
    expect(res.headers['www-authenticate']).toBe(`Bearer realm="${cluster.controlUrl}/token",service="agent-1"`);
    const scoped = await request(`${cluster.agents[0]!.peerUrl}/v2/team/app/manifests/1`);
    await scoped.body.dump();
    expect(scoped.headers['www-authenticate']).toBe(`Bearer realm="${cluster.controlUrl}/token",service="agent-1",scope="repository:team/app:pull"`);
  });

  it('the token service refuses no credentials, a wrong key and a service that is no machine', async () => {
    const none = await request(`${cluster.controlUrl}/token?service=agent-1`);
    await none.body.dump();
    expect(none.statusCode).toBe(401);
    expect(none.headers['www-authenticate']).toBe('Basic realm="stowage"');
    expect((await tokenFor('nobody', 'repository:team/app:pull')).status).toBe(401);
    const unknown = await request(`${cluster.controlUrl}/token?service=agent-9`, { headers: { authorization: `Basic ${Buffer.from(`x:${keys['ci-admin']}`).toString('base64')}` } });
    expect(unknown.statusCode).toBe(400);
    await unknown.body.dump();
  });

  it('a domain admin pushes by tag with skopeo; a user of the domain pulls but cannot push; another domain gets nothing', async () => {
    await skopeo(['copy', '--dest-creds', `ci-admin:${keys['ci-admin']}`, `oci:${layoutDir}:x`, `docker://${host}/team/app:1`]);
    const inspected = JSON.parse(await skopeo(['inspect', '--raw', '--creds', `ci-user:${keys['ci-user']}`, `docker://${host}/team/app:1`])) as { config: { digest: string } };
    expect(inspected.config.digest).toBe(image.configDigest);

    const userPush = await run('skopeo', ['--insecure-policy', 'copy', '--dest-tls-verify=false', '--dest-creds', `ci-user:${keys['ci-user']}`, `oci:${layoutDir}:x`, `docker://${host}/team/app:2`]);
    expect(userPush.code).not.toBe(0);
    const otherPull = await run('skopeo', ['--insecure-policy', 'inspect', '--tls-verify=false', '--creds', `other-admin:${keys['other-admin']}`, `docker://${host}/team/app:1`]);
    expect(otherPull.code).not.toBe(0);
    const wrongKey = await run('skopeo', ['--insecure-policy', 'inspect', '--tls-verify=false', '--creds', 'ci-admin:stk_not-a-key', `docker://${host}/team/app:1`]);
    expect(wrongKey.code).not.toBe(0);
    // Nothing the refused ones tried is there.
    const tags = JSON.parse(await skopeo(['list-tags', '--creds', `ci-admin:${keys['ci-admin']}`, `docker://${host}/team/app`])) as { Tags: string[] };
    expect(tags.Tags).toEqual(['1']);
  }, 120_000);

  it('a token holds for the repositories it names only', async () => {
    const { token } = await tokenFor('ci-admin', 'repository:team/app:pull,push');
    expect(token).toBeDefined();
    const own = await request(`${cluster.agents[0]!.peerUrl}/v2/team/app/blobs/uploads/`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    await own.body.dump();
    expect(own.statusCode).toBe(202);
    const other = await request(`${cluster.agents[0]!.peerUrl}/v2/team/other/blobs/uploads/`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    await other.body.dump();
    expect(other.statusCode).toBe(401);
    expect(other.headers['www-authenticate']).toContain('error="insufficient_scope"');
    // Nor on the other machine: tokens are minted with one machine's secret.
    const elsewhere = await request(`${cluster.agents[1]!.peerUrl}/v2/team/app/blobs/uploads/`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    await elsewhere.body.dump();
    expect(elsewhere.statusCode).toBe(401);
  });

  it('a stowctl upload grant (a peer token) still works, also through the token flow', async () => {
    // An image agent-1 lacks, so the push gets an upload grant.
    const other = await makeTestImage(await tmpDir('stowage-token-grant-'), { layers: 1 });
    const pushed = await cluster.api<{ upload: UploadGrant | null }>('POST', '/api/v1/operations/push', { digest: other.manifestDigest, size_bytes: 1, to: ['agent-1'] });
    const grant = pushed.body.upload?.password;
    expect(grant).toBeDefined();
    await skopeo(['copy', '--dest-creds', `ci-admin:${keys['ci-admin']}`, `oci:${layoutDir}:x`, `docker://${host}/team/grant:1`]);
    const inspected = JSON.parse(await skopeo(['inspect', '--raw', '--creds', `stowage:${grant}`, `docker://${host}/team/grant:1`])) as { config: { digest: string } };
    expect(inspected.config.digest).toBe(image.configDigest);
  }, 60_000);

  it('docker login to an agent with an API key, then docker push and pull of a tag (through another agent Docker API)', async () => {
    const dockerConfig = await tmpDir('stowage-docker-config-');
    const target = `${host}/team/web:1`;
    const bad = await docker(dockerConfig, ['login', host, '-u', 'ci-admin', '-p', 'stk_wrong']);
    expect(bad.code).not.toBe(0);
    const login = await docker(dockerConfig, ['login', host, '-u', 'ci-admin', '-p', keys['ci-admin']!]);
    expect(login.code, login.stderr).toBe(0);
    expect(login.stdout).toContain('Login Succeeded');

    const { tar } = await makeImageTar('local/web:1', { layers: 2 });
    await runOk('docker', ['load', '-i', tar], { env: { DOCKER_HOST: cluster.agents[1]!.dockerHost, DOCKER_CONFIG: dockerConfig } });
    const id = (await runOk('docker', ['image', 'inspect', '--format', '{{.Id}}', 'local/web:1'], { env: { DOCKER_HOST: cluster.agents[1]!.dockerHost, DOCKER_CONFIG: dockerConfig } })).trim();
    expect((await docker(dockerConfig, ['tag', 'local/web:1', target])).code).toBe(0);
    const push = await docker(dockerConfig, ['push', target]);
    expect(push.code, push.stderr + push.stdout).toBe(0);
    // agent-1 now serves the tag.
    const served = JSON.parse(await skopeo(['inspect', '--creds', `ci-user:${keys['ci-user']}`, `docker://${target}`])) as { Digest: string };
    expect(served.Digest).toMatch(/^sha256:/);

    expect((await docker(dockerConfig, ['rmi', target, 'local/web:1'])).code).toBe(0);
    const pull = await docker(dockerConfig, ['pull', target]);
    expect(pull.code, pull.stderr + pull.stdout).toBe(0);
    const pulledId = (await runOk('docker', ['image', 'inspect', '--format', '{{.Id}}', target], { env: { DOCKER_HOST: cluster.agents[1]!.dockerHost, DOCKER_CONFIG: dockerConfig } })).trim();
    expect(pulledId).toBe(id);
  }, 120_000);
});
