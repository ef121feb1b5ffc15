import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Availability } from '../../src/control/wire.js';
import { type Digest, digestHex, digestOf } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { type Cluster, startCluster } from '../harness/cluster.js';
import { type TestImageInfo, makeTestImage, skopeo } from '../harness/images.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * OCI artifacts on a joined agent, with real skopeo: an SBOM whose subject is an image is copied in, listed
 * by the referrers API, kept apart from images (stowctl image status, docker images), protected from blob
 * deletes while held, and removed with its blobs when its manifest is deleted.
 */

const SBOM_TYPE = 'application/vnd.example.sbom.v1+json';

let cluster: Cluster;
let peerUrl: string;
let host: string;
let adminKey: string;
let image: TestImageInfo;
let artifact: { digest: Digest; size: number; sbom: Digest };

async function bearer(scope: string, service = 'agent-1'): Promise<string> {
  const res = await request(`${cluster.controlUrl}/token?service=${service}&scope=${encodeURIComponent(scope)}`, {
    headers: { authorization: `Basic ${Buffer.from(`admin:${adminKey}`).toString('base64')}` },
  });
  return `Bearer ${((await res.body.json()) as { token: string }).token}`;
}

/** An OCI layout holding one artifact (empty config, one SBOM layer) whose subject is `subject`, tagged `tag`. */
async function makeArtifactLayout(dir: string, subject: TestImageInfo, tag: string): Promise<{ digest: Digest; size: number; sbom: Digest }> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const put = async (data: Buffer) => {
    const digest = digestOf(data);
    await writeFile(join(dir, 'blobs', 'sha256', digestHex(digest)), data);
    return { digest, size: data.length };
  };
  const empty = await put(Buffer.from('{}'));
  const sbom = await put(Buffer.from(JSON.stringify({ spdxVersion: 'SPDX-2.3', name: 'test image' })));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      artifactType: SBOM_TYPE,
      config: { mediaType: 'application/vnd.oci.empty.v1+json', ...empty },
      layers: [{ mediaType: SBOM_TYPE, ...sbom }],
      subject: { mediaType: MediaType.OciManifest, digest: subject.manifestDigest, size: subject.manifestSize },
      annotations: { 'org.opencontainers.image.created': '2024-01-01T00:00:00Z' },
    }),
  );
  const m = await put(manifest);
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: MediaType.OciManifest, ...m, annotations: { 'org.opencontainers.image.ref.name': tag } }],
    }),
  );
  return { ...m, sbom: sbom.digest };
}

beforeAll(async () => {
  cluster = await startCluster({ agents: 2 });
  peerUrl = cluster.agents[0]!.peerUrl;
  host = new URL(peerUrl).host;
  adminKey = cluster.adminToken;
  const imageDir = await tmpDir('stowage-art-img-');
  image = await makeTestImage(imageDir, { layers: 1, tag: 'x' });
  await skopeo(['copy', '--dest-creds', `admin:${adminKey}`, `oci:${imageDir}:x`, `docker://${host}/team/app:1`]);
  const artifactDir = await tmpDir('stowage-art-sbom-');
  artifact = await makeArtifactLayout(artifactDir, image, 'sbom');
  await skopeo(['copy', '--preserve-digests', '--dest-creds', `admin:${adminKey}`, `oci:${artifactDir}:sbom`, `docker://${host}/team/app:sbom`]);
}, 90_000);

afterAll(async () => cluster?.close());

describe('OCI artifacts and referrers', () => {
  it('lists an artifact skopeo copied in among its subject referrers, with the artifactType filter', async () => {
    const auth = await bearer('repository:team/app:pull');
    const res = await request(`${peerUrl}/v2/team/app/referrers/${image.manifestDigest}`, { headers: { authorization: auth } });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe(MediaType.OciIndex);
    expect(res.headers['oci-filters-applied']).toBeUndefined();
    const index = (await res.body.json()) as { manifests: Array<Record<string, unknown>> };
    expect(index.manifests).toEqual([
      { mediaType: MediaType.OciManifest, digest: artifact.digest, size: artifact.size, artifactType: SBOM_TYPE, annotations: { 'org.opencontainers.image.created': '2024-01-01T00:00:00Z' } },
    ]);

    const filtered = await request(`${peerUrl}/v2/team/app/referrers/${image.manifestDigest}?artifactType=application/vnd.other`, { headers: { authorization: auth } });
    expect(filtered.headers['oci-filters-applied']).toBe('artifactType');
    expect(((await filtered.body.json()) as { manifests: unknown[] }).manifests).toEqual([]);

    // The artifact comes back byte for byte, by tag.
    const raw = await skopeo(['inspect', '--raw', '--creds', `admin:${adminKey}`, `docker://${host}/team/app:sbom`]);
    expect(digestOf(Buffer.from(raw))).toBe(artifact.digest);
  });

  it('shows images, not their artifacts, in stowctl image status and docker images', async () => {
    await cluster.waitForImage('agent-1', image.manifestDigest);
    const status = await cluster.api<{ records: Availability[] }>('GET', '/api/v1/images/status?machine=agent-1');
    expect(status.body.records.map((r) => r.digest)).toEqual([image.manifestDigest]);
    expect(status.body.records[0]!.references).toEqual(['docker.io/team/app:1']);
    const res = await request(`${cluster.agents[0]!.dockerHost.replace('tcp://', 'http://')}/images/json`);
    const list = (await res.body.json()) as Array<{ RepoTags: string[] | null }>;
    expect(list.flatMap((i) => i.RepoTags ?? [])).toEqual(['team/app:1']);
  });

  it('travels with its subject image when the image is distributed to another machine', async () => {
    const started = await cluster.api<{ operation: { id: string } }>('POST', '/api/v1/operations/distribute', { digest: image.manifestDigest, from: 'agent-1', to: ['agent-2'] });
    expect(started.status).toBe(202);
    const op = await cluster.settle(started.body.operation.id);
    expect(op.status).toBe('succeeded');
    const auth = await bearer('repository:team/app:pull', 'agent-2');
    const peer2 = cluster.agents[1]!.peerUrl;
    const res = await request(`${peer2}/v2/team/app/referrers/${image.manifestDigest}`, { headers: { authorization: auth } });
    const index = (await res.body.json()) as { manifests: Array<{ digest: string; artifactType?: string }> };
    expect(index.manifests.map((m) => [m.digest, m.artifactType])).toEqual([[artifact.digest, SBOM_TYPE]]);
    const manifest = await request(`${peer2}/v2/team/app/manifests/${artifact.digest}`, { headers: { authorization: auth } });
    expect(digestOf(Buffer.from(await manifest.body.arrayBuffer()))).toBe(artifact.digest);
    const sbom = await request(`${peer2}/v2/team/app/blobs/${artifact.sbom}`, { headers: { authorization: auth } });
    expect(digestOf(Buffer.from(await sbom.body.arrayBuffer()))).toBe(artifact.sbom);
    // agent-2 reports the image, not the artifact.
    await cluster.waitForImage('agent-2', image.manifestDigest);
    const status = await cluster.api<{ records: Availability[] }>('GET', '/api/v1/images/status?machine=agent-2');
    expect(status.body.records.map((r) => r.digest)).toEqual([image.manifestDigest]);
  }, 60_000);

  it('refuses to delete a blob a held artifact needs, then deletes the artifact with its blobs', async () => {
    const auth = await bearer('repository:team/app:pull,push,delete');
    const blobDelete = await request(`${peerUrl}/v2/team/app/blobs/${artifact.sbom}`, { method: 'DELETE', headers: { authorization: auth } });
    expect(blobDelete.statusCode).toBe(409);
    expect(((await blobDelete.body.json()) as { errors: Array<{ code: string }> }).errors[0]!.code).toBe('DENIED');
    const still = await request(`${peerUrl}/v2/team/app/blobs/${artifact.sbom}`, { method: 'HEAD', headers: { authorization: auth } });
    await still.body.dump();
    expect(still.statusCode).toBe(200);

    const del = await request(`${peerUrl}/v2/team/app/manifests/${artifact.digest}`, { method: 'DELETE', headers: { authorization: auth } });
    await del.body.dump();
    expect(del.statusCode).toBe(202);
    for (const path of [`manifests/${artifact.digest}`, 'manifests/sbom', `blobs/${artifact.sbom}`]) {
      const gone = await request(`${peerUrl}/v2/team/app/${path}`, { method: 'HEAD', headers: { authorization: auth } });
      await gone.body.dump();
      expect({ path, status: gone.statusCode }).toEqual({ path, status: 404 });
    }
    const referrers = await request(`${peerUrl}/v2/team/app/referrers/${image.manifestDigest}`, { headers: { authorization: auth } });
    expect(((await referrers.body.json()) as { manifests: unknown[] }).manifests).toEqual([]);
    // The subject image is untouched.
    const subject = await request(`${peerUrl}/v2/team/app/manifests/1`, { method: 'HEAD', headers: { authorization: auth } });
    await subject.body.dump();
    expect(subject.headers['docker-content-digest']).toBe(image.manifestDigest);
    expect(await readFile(join(cluster.agents[0]!.dataDir, 'store', 'blobs', 'sha256', digestHex(image.layers[0]!.digest))).then((b) => b.length)).toBe(image.layers[0]!.size);
  });
});
