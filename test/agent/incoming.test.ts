import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IncomingUploads } from '../../src/agent/incoming.js';
import { digestOf } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { type FreshStore, freshStore } from '../harness/store.js';
import { pseudoRandom } from '../harness/streams.js';

/**
 * Push announcements on an agent's real store: the manifest is served and the blobs not yet here are
 * expected until the push is withdrawn, including when the withdraw comes while the announcement is still
 * being made (the store is asked, asynchronously, which blobs it already holds).
 */

let s: FreshStore;

beforeAll(async () => {
  s = await freshStore('stowage-incoming-');
});

afterAll(() => s.close());

function image(seed: number): { manifest: string; digest: ReturnType<typeof digestOf>; layer: ReturnType<typeof digestOf> } {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [digestOf(Buffer.from(`diff ${seed}`))] } }));
  const layer = pseudoRandom(4096, seed);
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: MediaType.OciConfig, digest: digestOf(config), size: config.length },
    layers: [{ mediaType: MediaType.OciLayerGzip, digest: digestOf(layer), size: layer.length }],
  });
  return { manifest, digest: digestOf(Buffer.from(manifest)), layer: digestOf(layer) };
}

describe('push announcements', () => {
  it('serve the manifest and expect the missing blobs until withdrawn', async () => {
    const incoming = new IncomingUploads(s.store);
    const img = image(1);
    await incoming.announce('op-1', img.manifest, 60_000);
    expect(incoming.manifest(img.digest)?.toString('utf8')).toBe(img.manifest);
    expect(s.store.liveReader?.(img.layer)?.size).toBe(4096);
    expect(incoming.withdraw('op-1')).toBe(true);
    expect(incoming.manifest(img.digest)).toBeUndefined();
    expect(s.store.liveReader?.(img.layer)).toBeUndefined();
  });

  it('end when withdrawn while the announcement is still being made: nothing stays served or expected', async () => {
    const incoming = new IncomingUploads(s.store);
    const img = image(2);
    const announcing = incoming.announce('op-2', img.manifest, 60_000);
    // The announcement is looking at the store now; the push ends (or the control plane gave up on its answer).
    expect(incoming.withdraw('op-2')).toBe(true);
    await announcing;
    expect(incoming.manifest(img.digest)).toBeUndefined();
    expect(s.store.liveReader?.(img.layer)).toBeUndefined();
    expect(incoming.withdraw('op-2')).toBe(false);
  });
});
