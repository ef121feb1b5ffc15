import { spawn } from 'node:child_process';
import { open, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { beforeEach, describe, expect, it } from 'vitest';
import { StowageError } from '../../src/errors.js';
import { digestOf } from '../../src/oci/digest.js';
import { ContentStore } from '../../src/store/content-store.js';
import { ingestEntries, listBlobs } from '../harness/store.js';
import { chunked, pseudoRandom } from '../harness/streams.js';
import { tmpDir } from '../harness/tmp.js';

const repoRoot = resolve(import.meta.dirname, '../..');
const KEY = 'transfer/op-1/sha256:layer';
const CHUNK = 32 * 1024;

let dir: string;

beforeEach(async () => {
  dir = await tmpDir('stowage-crash-');
});

/**
 * Runs a separate node process that streams `contentFile` into an ingest slowly, and SIGKILLs it once
 * it has written `killAfterChunks` chunks: the store sees exactly what a crashed agent leaves behind.
 */
async function writeThenGetKilled(storeRoot: string, contentFile: string, killAfterChunks: number): Promise<void> {
  const script = join(dir, 'slow-writer.mts');
  const storeModule = pathToFileURL(join(repoRoot, 'src/store/content-store.ts')).href;
  const ingestModule = pathToFileURL(join(repoRoot, 'src/store/ingest.ts')).href;
  await writeFile(
    script,
    `
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ContentStore } from ${JSON.stringify(storeModule)};
import { ingestDirName } from ${JSON.stringify(ingestModule)};
const [root, file, key] = process.argv.slice(2);
const data = await readFile(file);
const store = await ContentStore.open(root);
const ingest = await store.openIngest(key);
const dataFile = join(root, 'ingest', ingestDirName(key), 'data');
let n = 0;
await ingest.write((async function* () {
  for (let i = 0; i < data.length; i += ${CHUNK}) {
    // Writes are batched (a quiet source's bytes go out within milliseconds): wait until the chunks handed
    // over so far are in the file, so that reaching the report below means they are.
    while ((await stat(dataFile)).size < i) await new Promise((r) => setTimeout(r, 5));
    process.stdout.write('chunks ' + n + '\\n');
    await new Promise((r) => setTimeout(r, 20));
    n++;
    yield data.subarray(i, i + ${CHUNK});
  }
})());
process.stdout.write('finished\\n');
`,
  );
  const child = spawn(process.execPath, ['--import', 'tsx', script, storeRoot, contentFile, KEY], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<NodeJS.Signals | number | null>((res) => child.on('exit', (code, signal) => res(signal ?? code)));
  await new Promise<void>((res, rej) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes(`chunks ${killAfterChunks}\n`)) {
        child.kill('SIGKILL');
        res();
      }
      if (out.includes('finished')) rej(new Error('writer finished before it could be killed'));
    });
    child.on('exit', () => rej(new Error(`writer exited on its own: ${stderr}`)));
  });
  expect(await exited).toBe('SIGKILL');
}

async function setUp(size: number) {
  const root = join(dir, 'store');
  const data = pseudoRandom(size, 7);
  const contentFile = join(dir, 'content.bin');
  await writeFile(contentFile, data);
  await writeThenGetKilled(root, contentFile, 6);
  const store = await ContentStore.open(root);
  return { root, data, store };
}

describe('ingest interrupted by SIGKILL', () => {
  it('shows no blob, then resumes from the bytes on disk and commits', async () => {
    const { data, store } = await setUp(2 * 1024 * 1024);
    expect(await listBlobs(store)).toEqual([]);

    const ingest = await store.openIngest(KEY);
    expect(ingest.offset).toBeGreaterThanOrEqual(6 * CHUNK);
    expect(ingest.offset).toBeLessThan(data.length);
    await ingest.write(chunked(data.subarray(ingest.offset)));
    expect(await ingest.commit({ digest: digestOf(data), size: data.length })).toEqual({ digest: digestOf(data), size: data.length });
    expect(await listBlobs(store)).toEqual([{ digest: digestOf(data), size: data.length }]);
    expect(digestOf(await store.readBytes(digestOf(data), data.length))).toBe(digestOf(data));
  });

  it('bytes damaged on disk before the resume are caught at commit and nothing is stored', async () => {
    const { root, data, store } = await setUp(2 * 1024 * 1024);
    const [ingestDir] = await ingestEntries(root);
    const fh = await open(join(root, 'ingest', ingestDir!, 'data'), 'r+');
    await fh.write(Buffer.from([0xff ^ data[100]!]), 0, 1, 100);
    await fh.close();

    const ingest = await store.openIngest(KEY);
    await ingest.write(chunked(data.subarray(ingest.offset)));
    const err = await ingest.commit({ digest: digestOf(data), size: data.length }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StowageError);
    expect((err as StowageError).code).toBe('DIGEST_MISMATCH');
    expect(await listBlobs(store)).toEqual([]);
    expect(await ingestEntries(root)).toEqual([]);
  });
});
