import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseAgentConfig } from '../../src/agent/config.js';
import { run } from '../harness/run.js';
import { tmpDir } from '../harness/tmp.js';

const stowd = fileURLToPath(new URL('../../bin/stowd.js', import.meta.url));

describe('stowd agent cluster flags', () => {
  it('refuses a join token without a control plane, and a first start with no way to join', async () => {
    const dir = await tmpDir('stowage-agent-flags-');
    const lone = await run(process.execPath, [stowd, 'agent', '--data-dir', join(dir, 'a'), '--join-token', 'sjt_x'], {});
    expect(lone.code).toBe(2);
    expect(lone.stderr).toContain('--join-token needs --control-url');

    const noToken = await run(process.execPath, [stowd, 'agent', '--data-dir', join(dir, 'b'), '--peer-port', '0', '--control-url', 'http://127.0.0.1:1'], {
      STOWAGE_JOIN_TOKEN: '',
    });
    expect(noToken.code).toBe(2);
    expect(noToken.stderr).toMatch(/BAD_REQUEST: cannot join control plane http:\/\/127\.0\.0\.1:1: this machine has not joined yet, and no join token/);
    expect(existsSync(join(dir, 'b', 'store'))).toBe(false);

    const badLabel = await run(process.execPath, [stowd, 'agent', '--data-dir', join(dir, 'c'), '--label', 'novalue'], {});
    expect(badLabel.code).not.toBe(0);
    expect(badLabel.stderr).toContain('expected key=value');
  });

  it('validates the control section of a configuration file', () => {
    expect(() => parseAgentConfig({ dataDir: '/tmp/x', control: { url: 'ftp://x' } })).toThrow(/control\.url: expected an http/);
    expect(() => parseAgentConfig({ dataDir: '/tmp/x', control: { url: 'http://x', name: 'Bad Name' } })).toThrow(/control\.name/);
    expect(() => parseAgentConfig({ dataDir: '/tmp/x', transfer: { maxBytesPerSecond: 0 } })).toThrow(/transfer\.maxBytesPerSecond/);
    const c = parseAgentConfig({ dataDir: '/tmp/x', control: { url: 'http://cp:8080/', labels: { zone: 'a' } }, advertiseUrl: 'http://10.0.0.5:5080' });
    expect(c.control).toEqual({ url: 'http://cp:8080', labels: { zone: 'a' } });
    expect(c.transfer).toEqual({});
  });
});
