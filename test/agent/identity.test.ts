import { readdir, stat, writeFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { identityPath, readIdentity, writeIdentity } from '../../src/agent/identity.js';
import { tmpDir } from '../harness/tmp.js';

describe('machine identity file', () => {
  it('is written whole with mode 0600, read back, and absent before a join', async () => {
    const dir = await tmpDir('stowage-identity-');
    expect(await readIdentity(dir)).toBeUndefined();
    const identity = { control_url: 'http://cp:5070', machine_id: 'm-1', machine_secret: 'sms_secret' };
    await writeIdentity(dir, identity);
    await writeIdentity(dir, { ...identity, machine_id: 'm-2' });
    expect(await readIdentity(dir)).toEqual({ ...identity, machine_id: 'm-2' });
    expect((await stat(identityPath(dir))).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(['identity.json']); // no temp files left behind
  });

  it('refuses a damaged file instead of joining again under another name', async () => {
    const dir = await tmpDir('stowage-identity-');
    for (const text of ['{nope', JSON.stringify({ machine_id: 'm' })]) {
      await writeFile(identityPath(dir), text);
      await expect(readIdentity(dir)).rejects.toMatchObject({ code: 'BAD_REQUEST', message: expect.stringContaining('not a valid machine identity') });
    }
  });
});
