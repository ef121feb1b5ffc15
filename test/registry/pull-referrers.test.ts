import { type IncomingMessage, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { digestOf } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { RegistryClient } from '../../src/registry/client.js';
import { pullReferrers } from '../../src/registry/pull-referrers.js';
import { type FreshStore, freshStore } from '../harness/store.js';
import { pseudoRandom } from '../harness/streams.js';

/**
 * The referrers (signatures, SBOMs) a transfer brings along with an image come from a source that may stop
 * answering: like the image's own blobs, every request is cut after the stall timeout, so the transfer goes
 * on (they are best effort) instead of hanging; nothing partial is kept.
 */

const subject = digestOf(Buffer.from('the subject image manifest'));
const config = Buffer.from('{}');
const layer = pseudoRandom(256 * 1024, 7);
const artifact = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    artifactType: 'application/vnd.example.sbom',
    config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: digestOf(config), size: config.length },
    layers: [{ mediaType: 'application/octet-stream', digest: digestOf(layer), size: layer.length }],
    subject: { mediaType: MediaType.OciManifest, digest: subject, size: 26 },
  }),
);
const listing = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.OciIndex,
    manifests: [{ mediaType: MediaType.OciManifest, digest: digestOf(artifact), size: artifact.length, artifactType: 'application/vnd.example.sbom' }],
  }),
);

type Stall = 'listing' | 'layer';

/** A source whose `stall` request gets nothing more (the listing: no answer at all; the layer: half its bytes). */
async function stallingSource(stall: Stall): Promise<{ client: RegistryClient; close(): Promise<void> }> {
  const send = (res: ServerResponse, type: string, body: Buffer) => res.writeHead(200, { 'content-type': type, 'content-length': body.length, 'docker-content-digest': digestOf(body) }).end(body);
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? '';
    if (url.includes('/referrers/')) {
      if (stall !== 'listing') send(res, MediaType.OciIndex, listing);
    } else if (url.includes('/manifests/')) send(res, MediaType.OciManifest, artifact);
    else if (url.endsWith(digestOf(config))) send(res, 'application/octet-stream', config);
    else if (url.endsWith(digestOf(layer))) {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': layer.length });
      res.write(layer.subarray(0, layer.length / 2));
    } else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  // A client that would wait forever on its own (no headers or body timeout): only the stall guard can end it.
  const patient = new Agent({ headersTimeout: 0, bodyTimeout: 0 });
  return {
    client: new RegistryClient({ host: `127.0.0.1:${(server.address() as AddressInfo).port}`, dispatcher: patient }),
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await patient.close();
    },
  };
}

let dst: FreshStore | undefined;
let source: { close(): Promise<void> } | undefined;
afterEach(async () => {
  await source?.close();
  dst?.close();
});

describe('pulling the referrers of an image', () => {
  it.each<Stall>(['listing', 'layer'])('gives up on a source that stops answering (%s) after the stall timeout, keeping nothing of it', async (stall) => {
    dst = await freshStore('stowage-referrers-');
    const s = await stallingSource(stall);
    source = s;
    const pulled = pullReferrers(s.client, 'test/app', [subject], dst, { stallTimeoutMs: 300 });
    await expect(pulled).rejects.toMatchObject({ code: 'TRUNCATED' });
    expect(await dst.store.has(digestOf(layer))).toBe(false);
    expect(dst.images.getArtifact(digestOf(artifact))).toBeUndefined();
  }, 60_000);

  it('stops at once when the transfer stops', async () => {
    dst = await freshStore('stowage-referrers-');
    const s = await stallingSource('layer');
    source = s;
    const stop = new AbortController();
    const pulled = pullReferrers(s.client, 'test/app', [subject], dst, { stallTimeoutMs: 3_600_000, signal: stop.signal });
    setTimeout(() => stop.abort(new Error('the agent is stopping')), 200);
    await expect(pulled).rejects.toThrow('the agent is stopping');
    expect(await dst.store.has(digestOf(layer))).toBe(false);
  }, 60_000);
});
