import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '../../src/agent/agent.js';
import { parseAgentConfig } from '../../src/agent/config.js';
import { isStowageError } from '../../src/errors.js';
import { makeImageTar, skopeo } from '../harness/images.js';
import { run } from '../harness/run.js';
import { tmpDir } from '../harness/tmp.js';

/** Two whole agents, as `stowd agent` runs them: the docker CLI on one, the other pulling from its /v2/. */
describe('agent', () => {
  let a: RunningAgent;
  let b: RunningAgent;
  let dockerConfig: string;
  let peerHostA: string;

  const dockerOn = (agent: RunningAgent, host: 'socket' | 'tcp', args: string[]) =>
    run('docker', args, {
      DOCKER_HOST: host === 'socket' ? `unix://${agent.engineSocket}` : agent.engineTcp!,
      DOCKER_CONFIG: dockerConfig,
    });

  beforeAll(async () => {
    dockerConfig = await tmpDir('stowage-agent-docker-');
    a = await startAgent(parseAgentConfig({ dataDir: await tmpDir('stowage-agent-a-'), engine: { tcp: { port: 0 } } }));
    peerHostA = new URL(a.peerUrl).host;
    // B reaches A's /v2/ over plain HTTP like any insecure registry: machine to machine, no Docker engine.
    b = await startAgent(
      parseAgentConfig({
        dataDir: await tmpDir('stowage-agent-b-'),
        engine: { tcp: { port: 0 } },
        registries: { insecureRegistries: [peerHostA] },
      }),
    );
  });

  afterAll(async () => {
    await a?.close();
    await b?.close();
  });

  it('serves the Docker API on its unix socket and TCP, and the loaded image on /v2/ to skopeo and to another agent', async () => {
    const { tar, image } = await makeImageTar('team/app:1', { layers: 3 });
    const load = await dockerOn(a, 'socket', ['load', '-i', tar]);
    expect(load.stderr).toBe('');
    expect(load.stdout).toContain('Loaded image: team/app:1');

    const idOnA = (await dockerOn(a, 'tcp', ['image', 'inspect', '--format', '{{.Id}}', 'team/app:1'])).stdout.trim();
    expect(idOnA).toBe(image.configDigest);

    // A standard tool pulls from the agent's read-only distribution endpoint.
    const dir = await tmpDir('stowage-agent-dir-');
    await skopeo(['copy', `docker://${peerHostA}/team/app:1`, `dir:${dir}`]);
    expect(existsSync(join(dir, image.configDigest.slice('sha256:'.length)))).toBe(true);

    // Machine to machine: B's Docker API pulls the image from A's /v2/ and ends up with the same image ID.
    const pull = await dockerOn(b, 'tcp', ['pull', `${peerHostA}/team/app:1`]);
    expect(pull.code, pull.stderr).toBe(0);
    expect(pull.stdout).toContain(`Status: Downloaded newer image for ${peerHostA}/team/app:1`);
    const idOnB = (await dockerOn(b, 'socket', ['image', 'inspect', '--format', '{{.Id}}', `${peerHostA}/team/app:1`])).stdout.trim();
    expect(idOnB).toBe(idOnA);
  });

  it('does not accept writes on /v2/', async () => {
    const res = await fetch(`${a.peerUrl}/v2/team/app/blobs/uploads/`, { method: 'POST' });
    expect(res.status).toBe(405);
  });
});

describe('agent configuration', () => {
  it('refuses to expose the unauthenticated Docker API beyond loopback', () => {
    let caught: unknown;
    try {
      parseAgentConfig({ dataDir: '/tmp/x', engine: { tcp: { host: '0.0.0.0', port: 2375 } } });
    } catch (err) {
      caught = err;
    }
    expect(isStowageError(caught, 'BAD_REQUEST')).toBe(true);
    expect((caught as Error).message).toMatch(/engine\.tcp.*loopback/);
  });

  it('accepts the example configuration the README shows', async () => {
    const readme = await readFile(fileURLToPath(new URL('../../README.md', import.meta.url)), 'utf8');
    const example = /## Agent configuration[\s\S]*?```json\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(example).toBeDefined();
    const config = parseAgentConfig(JSON.parse(example!.replace('"…"', '"secret"')));
    expect(config.engine.tcp).toEqual({ host: '127.0.0.1', port: 2375 });
    expect(config.registries.insecureRegistries).toEqual(['registry.internal:5000']);
  });

  it('names the unknown field in a configuration file', () => {
    expect(() => parseAgentConfig({ dataDir: '/tmp/x', insecure: true })).toThrow(/invalid agent configuration: .*insecure/);
  });
});

describe('stowd agent command line', () => {
  const stowd = fileURLToPath(new URL('../../bin/stowd.js', import.meta.url));

  it('refuses flags beside --config instead of ignoring them, and names a broken configuration file', async () => {
    const dir = await tmpDir('stowage-agent-cli-');
    const file = join(dir, 'agent.json');
    await writeFile(file, JSON.stringify({ dataDir: join(dir, 'data') }));
    const clash = await run(process.execPath, [stowd, 'agent', '--config', file, '--peer-port', '6000', '--data-dir', dir], {});
    expect(clash.code).toBe(2);
    expect(clash.stderr).toContain('--data-dir, --peer-port cannot be combined with --config');
    expect(existsSync(join(dir, 'data'))).toBe(false);

    await writeFile(file, JSON.stringify({ dataDir: join(dir, 'data'), engine: { tcp: { host: '0.0.0.0', port: 2375 } } }));
    const open = await run(process.execPath, [stowd, 'agent', '--config', file], {});
    expect(open.code).toBe(2);
    expect(open.stderr).toMatch(/BAD_REQUEST: invalid agent configuration: engine\.tcp.*loopback/);
    expect(existsSync(join(dir, 'data'))).toBe(false);
  });
});
