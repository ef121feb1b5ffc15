import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { Agent, type Dispatcher, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { type Digest, digestOf } from '../../src/oci/digest.js';
import { bodyChunks } from '../../src/registry/body-chunks.js';
import { RegistryClient } from '../../src/registry/client.js';
import { fetchBlobInto } from '../../src/registry/pull.js';
import { until } from '../harness/cluster.js';
import { arriving, serveV2 } from '../harness/served-store.js';
import { type FreshStore, freshStore } from '../harness/store.js';
import { pseudoRandom } from '../harness/streams.js';

/**
 * A machine serves, from its /v2/, a blob it is still receiving (pipelined fan-out). The upstream is an
 * ingest keyed by the blob's digest whose source the test feeds by hand, so what has "arrived" is decided
 * here, not by timing: the reader gets what is written, waits for the rest, never gets the final byte before
 * the blob is verified and committed, and sees its connection fail when the ingest fails.
 */

let src: FreshStore;
let dst: FreshStore;
let served: { host: string; close: () => Promise<void> };
let host: string;

beforeAll(async () => {
  src = await freshStore('stowage-live-src-');
  dst = await freshStore('stowage-live-dst-');
  served = await serveV2(src);
  host = served.host;
});

afterAll(async () => {
  await served.close();
  src.close();
  dst.close();
});

/** Reads a response body as it comes, so a test can wait for "this many bytes received". */
function reading(body: Dispatcher.ResponseData['body']): { received: () => Buffer; ended: Promise<Buffer | Error> } {
  const chunks: Buffer[] = [];
  const ended = (async () => {
    try {
      for await (const c of body) chunks.push(c as Buffer);
      return Buffer.concat(chunks);
    } catch (err) {
      return err as Error;
    }
  })();
  return { received: () => Buffer.concat(chunks), ended };
}

const blobUrl = (digest: Digest) => `http://${host}/v2/test/app/blobs/${digest}`;

describe('a blob still arriving', () => {
  it('is served as it arrives, byte-identical, its last byte only once it is verified, then verifies downstream', async () => {
    const data = pseudoRandom(3 * 1024 * 1024 + 17, 11);
    const up = await arriving(src.store, data);
    up.feed.write(data.subarray(0, 1024 * 1024));
    await until('the first bytes on disk', async () => (src.store.liveReader?.(up.digest) ? true : undefined));

    const res = await request(blobUrl(up.digest));
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-length']).toBe(String(data.length));
    expect(res.headers['docker-content-digest']).toBe(up.digest);
    const body = reading(res.body);
    await until('the first MiB at the reader', async () => (body.received().length === 1024 * 1024 ? true : undefined));

    // Everything but the verification: the reader has all but the final byte, and is still open.
    up.feed.end(data.subarray(1024 * 1024));
    expect(await up.written).toMatchObject({ digest: up.digest, size: data.length });
    await until('all but the last byte', async () => (body.received().length === data.length - 1 ? true : undefined));
    const state = await Promise.race([body.ended.then(() => 'ended'), new Promise((r) => setTimeout(() => r('open'), 200))]);
    expect(state).toBe('open');

    await up.ingest.commit({ digest: up.digest, size: data.length });
    const got = await body.ended;
    expect(Buffer.isBuffer(got) && got.equals(data)).toBe(true);
    expect(await src.store.has(up.digest)).toBe(true);
  });

  it('can be pulled by another machine while it arrives, with Range from an offset, and is verified there', async () => {
    const data = pseudoRandom(2 * 1024 * 1024 + 5, 12);
    const up = await arriving(src.store, data);
    up.feed.write(data.subarray(0, 700_000));
    await until('bytes on disk', async () => (src.store.liveReader?.(up.digest) ? true : undefined));

    // A downstream machine that already holds a prefix resumes from it.
    const down = await dst.store.openIngest(up.digest);
    await down.write(Readable.from([data.subarray(0, 300_000)]));
    const client = new RegistryClient({ host });
    const stream = await client.getBlob('test/app', up.digest, { start: down.offset });
    const pulling = down.write(stream);
    up.feed.end(data.subarray(700_000));
    await up.written;
    await up.ingest.commit({ digest: up.digest, size: data.length });
    await pulling;
    await expect(down.commit({ digest: up.digest, size: data.length })).resolves.toEqual({ digest: up.digest, size: data.length });
    expect((await dst.store.readBytes(up.digest, 10 * 1024 * 1024)).equals(data)).toBe(true);
  });

  it('answers a bounded Range inside the bytes arrived so far at once, and a HEAD only once it is whole', async () => {
    const data = pseudoRandom(1024 * 1024, 13);
    const up = await arriving(src.store, data);
    up.feed.write(data.subarray(0, 600_000));
    await until('bytes on disk', async () => (src.store.liveReader?.(up.digest) ? true : undefined));
    const res = await request(blobUrl(up.digest), { headers: { range: 'bytes=1000-499999' } });
    expect(res.statusCode).toBe(206);
    expect(res.headers['content-range']).toBe(`bytes 1000-499999/${data.length}`);
    expect(Buffer.from(await res.body.arrayBuffer()).equals(data.subarray(1000, 500_000))).toBe(true);
    const head = await request(blobUrl(up.digest), { method: 'HEAD' });
    expect(head.statusCode).toBe(404);
    up.feed.end(data.subarray(600_000));
    await up.written;
    await up.ingest.commit({ digest: up.digest, size: data.length });
    expect((await request(blobUrl(up.digest), { method: 'HEAD' })).statusCode).toBe(200);
  });

  it('is waited for when a transfer expects it and its ingest has not started yet', async () => {
    const data = pseudoRandom(256 * 1024, 14);
    const digest = digestOf(data);
    const release = src.store.expectBlob?.(digest, data.length);
    expect(release).toBeDefined();
    const res = await request(blobUrl(digest));
    expect(res.statusCode).toBe(200);
    const body = reading(res.body);
    const ingest = await src.store.openIngest(digest);
    await ingest.write(Readable.from([data]));
    await ingest.commit({ digest, size: data.length });
    release?.();
    const got = await body.ended;
    expect(Buffer.isBuffer(got) && got.equals(data)).toBe(true);
  });
});

describe('a blob whose ingest fails', () => {
  it('cuts its readers off when the ingest is aborted: they never get a short body that looks whole', async () => {
    const data = pseudoRandom(2 * 1024 * 1024, 21);
    const up = await arriving(src.store, data);
    up.feed.write(data.subarray(0, 512 * 1024));
    await until('bytes on disk', async () => (src.store.liveReader?.(up.digest) ? true : undefined));
    const res = await request(blobUrl(up.digest));
    const body = reading(res.body);
    await until('bytes at the reader', async () => (body.received().length === 512 * 1024 ? true : undefined));
    up.feed.destroy(new Error('ECONNRESET (simulated)'));
    await up.written;
    await up.ingest.abort();
    const got = await body.ended;
    expect(got).toBeInstanceOf(Error);
    expect(body.received().length).toBeLessThan(data.length);
    // The transfer gives up: nothing is served under that digest any more.
    up.release();
    expect((await request(blobUrl(up.digest))).statusCode).toBe(404);
  });

  it('cuts its readers off when the bytes fail verification, before the final byte', async () => {
    const data = pseudoRandom(1024 * 1024, 22);
    const bad = Buffer.from(data);
    bad[bad.length - 10] = (bad[bad.length - 10] as number) ^ 0xff;
    const up = await arriving(src.store, data); // keyed by the good digest, fed the bad bytes
    up.feed.write(bad.subarray(0, 1000));
    await until('bytes on disk', async () => (src.store.liveReader?.(up.digest) ? true : undefined));
    const res = await request(blobUrl(up.digest));
    const body = reading(res.body);
    up.feed.end(bad.subarray(1000));
    await up.written;
    await until('all but the last byte', async () => (body.received().length === data.length - 1 ? true : undefined));
    await expect(up.ingest.commit({ digest: up.digest, size: data.length })).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
    expect(await body.ended).toBeInstanceOf(Error);
    expect(body.received().length).toBe(data.length - 1);
    expect(await src.store.has(up.digest)).toBe(false);
  });

  it('fails a reader waiting for a blob the transfer gave up on before it started', async () => {
    const data = pseudoRandom(64 * 1024, 23);
    const digest = digestOf(data);
    const release = src.store.expectBlob?.(digest, data.length);
    const res = await request(blobUrl(digest));
    const body = reading(res.body);
    release?.();
    expect(await body.ended).toBeInstanceOf(Error);
    expect(body.received().length).toBe(0);
  });
});

describe('a downloader of a blob still arriving', () => {
  it('fails, not waits forever, on a body whose connection was cut before it began to read it', async () => {
    const data = pseudoRandom(64 * 1024, 31);
    const digest = digestOf(data);
    const release = src.store.expectBlob?.(digest, data.length);
    // The headers come at once (nothing has arrived yet); then the transfer gives up and the reader is cut,
    // while the downloader is still getting ready (opening its ingest, say).
    const body = await new RegistryClient({ host }).getBlob('test/app', digest);
    release?.();
    await until('the cut to reach the downloader', async () => (body.destroyed ? true : undefined));
    const read = (async () => {
      for await (const _ of bodyChunks(body)) void _;
    })();
    await expect(read).rejects.toThrow();
  }, 60_000);

  it('passes over a source that never answers (no headers), after the stall timeout, to the next one', async () => {
    const data = pseudoRandom(128 * 1024, 32);
    const digest = digestOf(data);
    const ingest = await src.store.openIngest(digest);
    await ingest.write(Readable.from([data]));
    await ingest.commit({ digest, size: data.length });
    // Takes the request, answers nothing; its client would wait for headers forever (no headers timeout).
    let asked = 0;
    const silent = createServer(() => void asked++);
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const patient = new Agent({ headersTimeout: 0, bodyTimeout: 0 });
    onTestFinished(async () => {
      silent.closeAllConnections();
      await new Promise((resolve) => silent.close(resolve));
      await patient.close();
    });
    const quiet = new RegistryClient({ host: `127.0.0.1:${(silent.address() as AddressInfo).port}`, dispatcher: patient });
    const good = new RegistryClient({ host });
    await fetchBlobInto({ mediaType: 'application/octet-stream', digest, size: data.length }, dst.store, {
      blobSources: () => [
        { client: quiet, path: 'test/app' },
        { client: good, path: 'test/app' },
      ],
      stallTimeoutMs: 300,
    });
    expect(asked).toBe(1);
    expect((await dst.store.readBytes(digest, 1024 * 1024)).equals(data)).toBe(true);
  }, 60_000);
});
