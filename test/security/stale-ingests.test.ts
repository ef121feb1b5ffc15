import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, readFile, readdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { until } from '../harness/cluster.js';
import { freePort, makeImageTar } from '../harness/images.js';
import { run } from '../harness/run.js';
import { tmpDir } from '../harness/tmp.js';

// Issue 13, defect 5: 130 MB of a killed `docker load` stayed in the store's ingest directory through
// restarts and every prune: the cleanup existed but nothing called it.
const STOWD = join(import.meta.dirname, '..', '..', 'bin', 'stowd.js');
const STALE_AFTER_MS = 1_500;
const HOUR = 3600_000;

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
});

async function startAgent(dataDir: string, dockerPort: number, staleAfterMs: number): Promise<ChildProcess> {
  const config = join(dataDir, '..', 'agent.json');
  await writeFile(
    config,
    JSON.stringify({ dataDir, peer: { host: '127.0.0.1', port: 0 }, engine: { tcp: { host: '127.0.0.1', port: dockerPort } }, ingests: { staleAfterMs, sweepEveryMs: 200 } }),
  );
  const child = spawn(process.execPath, [STOWD, 'agent', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    let err = '';
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('agent ready')) resolve();
    });
    child.stderr?.on('data', (c: Buffer) => (err += c.toString()));
    child.once('exit', (code) => reject(new Error(`agent exited with ${code}: ${err}`)));
  });
  return child;
}

/** POST /images/load with the archive sent in `pieces`, `gapMs` apart. */
function slowLoad(dockerPort: number, archive: Buffer, pieces: number, gapMs: number, sent?: (n: number) => void) {
  const size = Math.ceil(archive.length / pieces);
  const body = Readable.from(
    (async function* () {
      for (let i = 0; i < pieces; i++) {
        if (i > 0) await new Promise((r) => setTimeout(r, gapMs));
        yield archive.subarray(i * size, (i + 1) * size);
        sent?.(i + 1);
      }
    })(),
  );
  return request(`http://127.0.0.1:${dockerPort}/images/load`, { method: 'POST', body, headers: { 'content-type': 'application/x-tar' } });
}

const ingestDir = (dataDir: string): string => join(dataDir, 'store', 'ingest');

describe('abandoned ingests on an agent', () => {
  it('a killed docker load leaves nothing after the restart; an old resumable ingest goes, a young one waits out its grace', async () => {
    const root = await tmpDir('stale-ingests-');
    const dataDir = join(root, 'agent');
    const port = await freePort();
    const env = { DOCKER_HOST: `tcp://127.0.0.1:${port}` };
    let agent = await startAgent(dataDir, port, HOUR);
    const { tar } = await makeImageTar('stale/killed:1', { layers: 1, layerBytes: 4 * 1024 * 1024 });
    const archive = await readFile(tar);

    // Kill -9 in the middle of a load: its partial layer stays in the ingest directory.
    let pieces = 0;
    const load = slowLoad(port, archive, 8, 300, (n) => (pieces = n)).catch(() => undefined);
    await until('half the archive to arrive', async () => (pieces >= 4 ? true : undefined));
    await until('a partial ingest on disk', async () => ((await readdir(ingestDir(dataDir))).length > 0 ? true : undefined));
    const gone = new Promise((resolve) => agent.once('exit', resolve));
    agent.kill('SIGKILL');
    // Restarted on the same port: the killed process must have let go of it first.
    await gone;
    await load;
    const killed = await readdir(ingestDir(dataDir));
    expect(killed.length).toBeGreaterThan(0);

    // Resumable ingests as a pull leaves them (keyed by the digest they will have): one idle for hours, one fresh.
    const old = join(ingestDir(dataDir), 'a'.repeat(64));
    const young = join(ingestDir(dataDir), 'b'.repeat(64));
    for (const [dir, key] of [
      [old, `sha256:${'1'.repeat(64)}`],
      [young, `sha256:${'2'.repeat(64)}`],
    ] as const) {
      await mkdir(dir);
      await writeFile(join(dir, 'meta.json'), JSON.stringify({ key }));
      await writeFile(join(dir, 'data'), Buffer.alloc(1024));
    }
    const hoursAgo = new Date(Date.now() - 3 * HOUR);
    await utimes(join(old, 'data'), hoursAgo, hoursAgo);
    await utimes(old, hoursAgo, hoursAgo);

    agent = await startAgent(dataDir, port, HOUR);
    expect(await readdir(ingestDir(dataDir))).toEqual(['b'.repeat(64)]);
    // The periodic sweep takes the young one once its grace period is over, without a restart.
    await utimes(join(young, 'data'), hoursAgo, hoursAgo);
    await utimes(young, hoursAgo, hoursAgo);
    await until('the young ingest to go stale and be collected', async () => ((await readdir(ingestDir(dataDir))).length === 0 ? true : undefined), { timeoutMs: 30_000 });
    // Nothing else changed: no image appeared from the killed load.
    expect((await run('docker', ['images', '-q'], env)).stdout.trim()).toBe('');
  }, 120_000);

  it('an ingest being written survives sweeps even when idle longer than the grace period', async () => {
    const root = await tmpDir('live-ingest-');
    const dataDir = join(root, 'agent');
    const port = await freePort();
    await startAgent(dataDir, port, STALE_AFTER_MS);
    const { tar } = await makeImageTar('stale/live:1', { layers: 1, layerBytes: 256 * 1024 });
    // Gaps longer than the grace period, with sweeps every 200 ms in between.
    const res = await slowLoad(port, await readFile(tar), 3, STALE_AFTER_MS + 1_000);
    const text = await res.body.text();
    expect(res.statusCode).toBe(200);
    expect(text).toContain('Loaded image: stale/live:1');
    expect((await run('docker', ['images', '--format', '{{.Repository}}:{{.Tag}}'], { DOCKER_HOST: `tcp://127.0.0.1:${port}` })).stdout).toContain('stale/live:1');
  }, 120_000);
});
