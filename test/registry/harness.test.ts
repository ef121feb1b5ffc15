import { describe, expect, it } from 'vitest';
import { makeMultiPlatformLayout, makeTestImage, skopeo } from '../harness/images.js';
import { startRegistry } from '../harness/registry.js';
import { tmpDir } from '../harness/tmp.js';

describe('test harness', () => {
  it('starts a registry and skopeo copies a generated layout into it', async () => {
    const reg = await startRegistry();
    try {
      const dir = await tmpDir();
      const img = await makeTestImage(dir, { layers: 2, tag: 'x' });
      await skopeo(['copy', `oci:${dir}:x`, `docker://${reg.host}/test/app:1`]);
      const raw = await skopeo(['inspect', '--raw', `docker://${reg.host}/test/app:1`]);
      expect(Buffer.from(raw)).toEqual(img.manifestBytes);
      const multi = await tmpDir();
      const idx = await makeMultiPlatformLayout(multi, ['linux/amd64', 'linux/arm64/v8'], { tag: 'x' });
      await skopeo(['copy', '--all', `oci:${multi}:x`, `docker://${reg.host}/test/multi:1`]);
      const rawIdx = await skopeo(['inspect', '--raw', `docker://${reg.host}/test/multi:1`]);
      expect(Buffer.from(rawIdx)).toEqual(idx.indexBytes);
    } finally {
      await reg.stop();
    }
  });

  it('starts a registry with htpasswd auth', async () => {
    const reg = await startRegistry({ htpasswd: { user: 'alice', password: 's3cret' } });
    try {
      expect((await fetch(`${reg.url}/v2/`)).status).toBe(401);
      const ok = await fetch(`${reg.url}/v2/`, { headers: { authorization: `Basic ${Buffer.from('alice:s3cret').toString('base64')}` } });
      expect(ok.status).toBe(200);
    } finally {
      await reg.stop();
    }
  });
});
