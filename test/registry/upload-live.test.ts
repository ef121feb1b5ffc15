import { PassThrough } from 'node:stream';
import Fastify, { type FastifyInstance } from 'fastify';
import { type Dispatcher, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintPeerToken, newSecret } from '../../src/control/peer-token.js';
import { type Digest, digestOf } from '../../src/oci/digest.js';
import { peerAuthorizer } from '../../src/registry/peer-auth.js';
import { registryRoutes } from '../../src/registry/routes.js';
import { until } from '../harness/cluster.js';
import { type FreshStore, freshStore, ingestEntries } from '../harness/store.js';
import { pseudoRandom } from '../harness/streams.js';

/**
 * push streams: a blob uploaded whole (a monolithic POST, or the PUT that carries all of an upload's bytes,
 * as stowctl sends every blob) is readable by peers from the same /v2/ while it arrives. What has arrived is
 * decided by the test feeding the upload body by hand, not by timing: the peer gets the bytes sent so far,
 * then the rest, byte-identical and verified; an upload that fails (wrong digest, cut off) gives the peer an
 * error, never a truncated blob, and leaves nothing behind.
 */

const MACHINE = 'm-upload-live';
const secret = newSecret('sms_');
const hour = () => Math.floor(Date.now() / 1000) + 3600;
const basic = (token: string) => `Basic ${Buffer.from(`x:${token}`).toString('base64')}`;
const PUSH = { authorization: basic(mintPeerToken(secret, { m: MACHINE, s: 'push', exp: hour() })) };
const PULL = { authorization: basic(mintPeerToken(secret, { m: MACHINE, s: 'pull', exp: hour() })) };
const MiB = 1024 * 1024;

let fresh: FreshStore;
let app: FastifyInstance;
let base: string;

beforeAll(async () => {
  fresh = await freshStore('stowage-upload-live-');
  app = Fastify({ logger: false });
  await app.register(registryRoutes, { store: fresh.store, images: fresh.images, authorize: peerAuthorizer(MACHINE, secret) });
  base = await app.listen({ host: '127.0.0.1', port: 0 });
});

afterAll(async () => {
  await app.close();
  fresh.close();
});

type Style = 'put' | 'monolithic';

/** Starts an upload of `digest` (`size` bytes declared) whose body the test feeds through `feed`. */
async function startUpload(style: Style, digest: Digest, size: number): Promise<{ feed: PassThrough; done: Promise<Dispatcher.ResponseData | Error> }> {
  let url = `${base}/v2/test/app/blobs/uploads/?digest=${digest}`;
  let method: 'POST' | 'PUT' = 'POST';
  if (style === 'put') {
    const started = await request(`${base}/v2/test/app/blobs/uploads/`, { method: 'POST', headers: PUSH });
    expect(started.statusCode).toBe(202);
    await started.body.dump();
    url = `${base}${String(started.headers['location'])}?digest=${digest}`;
    method = 'PUT';
  }
  const feed = new PassThrough();
  const done = request(url, {
    method,
    headers: { ...PUSH, 'content-type': 'application/octet-stream', 'content-length': String(size) },
    body: feed,
  }).catch((err: unknown) => err as Error);
  return { feed, done };
}

/** A peer's GET of the blob, once the upload has started writing it; its body read as it comes. */
async function peerReads(digest: Digest): Promise<{ received: () => number; ended: Promise<Buffer | Error> }> {
  const res = await until(
    'the blob to be readable while it arrives',
    async () => {
      const r = await request(`${base}/v2/test/app/blobs/${digest}`, { headers: PULL });
      if (r.statusCode === 200) return r;
      await r.body.dump();
      return undefined;
    },
    { timeoutMs: 120_000, everyMs: 20 },
  );
  const chunks: Buffer[] = [];
  let received = 0;
  const ended = (async () => {
    try {
      for await (const c of res.body) {
        chunks.push(c as Buffer);
        received += (c as Buffer).length;
      }
      return Buffer.concat(chunks);
    } catch (err) {
      return err as Error;
    }
  })();
  return { received: () => received, ended };
}

describe('a blob read while it is uploaded', () => {
  it.each<Style>(['put', 'monolithic'])('(%s) reaches a peer while it arrives, byte-identical and verified', async (style) => {
    const data = pseudoRandom(3 * MiB + 7, style === 'put' ? 31 : 32);
    const digest = digestOf(data);
    const up = await startUpload(style, digest, data.length);
    up.feed.write(data.subarray(0, MiB));
    const peer = await peerReads(digest);
    // The peer has bytes before the upload has sent the rest: nothing waits for the whole blob.
    await until('the first MiB at the peer', async () => (peer.received() === MiB ? true : undefined), { timeoutMs: 120_000, everyMs: 20 });
    expect(await fresh.store.has(digest)).toBe(false);

    up.feed.end(data.subarray(MiB));
    const res = await up.done;
    expect(res).not.toBeInstanceOf(Error);
    expect((res as Dispatcher.ResponseData).statusCode).toBe(201);
    await (res as Dispatcher.ResponseData).body.dump();
    const got = await peer.ended;
    expect(Buffer.isBuffer(got)).toBe(true);
    expect(digestOf(got as Buffer)).toBe(digest);
    expect((got as Buffer).equals(data)).toBe(true);
    expect(await fresh.store.has(digest)).toBe(true);
  });

  it.each<Style>(['put', 'monolithic'])('(%s) whose bytes do not match the digest fails the peer, which never gets the whole body', async (style) => {
    const data = pseudoRandom(2 * MiB, style === 'put' ? 41 : 42);
    const claimed = digestOf(pseudoRandom(2 * MiB, 43));
    const up = await startUpload(style, claimed, data.length);
    up.feed.write(data.subarray(0, MiB));
    const peer = await peerReads(claimed);
    await until('bytes at the peer', async () => (peer.received() > 0 ? true : undefined), { timeoutMs: 120_000, everyMs: 20 });
    up.feed.end(data.subarray(MiB));

    const res = await up.done;
    expect((res as Dispatcher.ResponseData).statusCode).toBe(400);
    await (res as Dispatcher.ResponseData).body.dump();
    const got = await peer.ended;
    expect(got).toBeInstanceOf(Error);
    expect(peer.received()).toBeLessThan(data.length);
    expect(await fresh.store.has(claimed)).toBe(false);
    await until('no ingest left', async () => ((await ingestEntries(fresh.dir)).length === 0 ? true : undefined), { timeoutMs: 120_000 });
  });

  it.each<Style>(['put', 'monolithic'])('(%s) cut off by the uploader fails the peer, and leaves nothing', async (style) => {
    const data = pseudoRandom(2 * MiB, style === 'put' ? 51 : 52);
    const digest = digestOf(data);
    const up = await startUpload(style, digest, data.length);
    up.feed.write(data.subarray(0, MiB));
    const peer = await peerReads(digest);
    await until('bytes at the peer', async () => (peer.received() > 0 ? true : undefined), { timeoutMs: 120_000, everyMs: 20 });
    up.feed.destroy(new Error('the uploader went away'));
    await up.done;

    const got = await peer.ended;
    expect(got).toBeInstanceOf(Error);
    expect(peer.received()).toBeLessThan(data.length);
    expect(await fresh.store.has(digest)).toBe(false);
    await until('no ingest left', async () => ((await ingestEntries(fresh.dir)).length === 0 ? true : undefined), { timeoutMs: 120_000 });
    // The upload can be made again, whole this time.
    const again = await startUpload(style, digest, data.length);
    again.feed.end(data);
    const res = (await again.done) as Dispatcher.ResponseData;
    expect(res.statusCode).toBe(201);
    await res.body.dump();
    expect(await fresh.store.has(digest)).toBe(true);
  });
});
