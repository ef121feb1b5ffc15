import { createHash } from 'node:crypto';
import { type Server, type Socket, createServer as createNetServer } from 'node:net';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { mintPeerToken, newSecret } from '../../src/control/peer-token.js';
import { isStowageError } from '../../src/errors.js';
import { type Digest, digestOf } from '../../src/oci/digest.js';
import { bodyChunks } from '../../src/registry/body-chunks.js';
import { RegistryClient } from '../../src/registry/client.js';
import { directGet } from '../../src/registry/direct-get.js';
import { markRecyclable } from '../../src/store/recyclable-chunks.js';
import type { ContentStoreApi } from '../../src/store/types.js';
import { until } from '../harness/cluster.js';
import { arriving, serveV2 } from '../harness/served-store.js';
import { type FreshStore, freshStore } from '../harness/store.js';
import { pseudoRandom } from '../harness/streams.js';

/**
 * Blobs from a Stowage peer are read off the socket directly (registry/direct-get.ts), not through undici:
 * a client holding a peer token takes that path. Against a real /v2/ (the registry routes over a content
 * store) the bytes are the blob's, live ones included, and verified downstream; against servers that answer
 * badly, every failure is an error, never a body that looks whole.
 */

let src: FreshStore;
let dst: FreshStore;
let served: { host: string; close: () => Promise<void> };
let host: string;

beforeAll(async () => {
  src = await freshStore('stowage-direct-src-');
  dst = await freshStore('stowage-direct-dst-');
  served = await serveV2(src);
  host = served.host;
});

afterAll(async () => {
  await served.close();
  src.close();
  dst.close();
});

/** A client as a transfer makes it for a peer: the peer token makes its blob reads direct. */
function peerClient(at = host): RegistryClient {
  const token = mintPeerToken(newSecret('sms_'), { m: 'peer', s: 'pull', exp: Math.floor(Date.now() / 1000) + 300 });
  return new RegistryClient({ host: at, credentials: { username: 'stowage', password: token } });
}

async function stored(store: ContentStoreApi, data: Buffer): Promise<Digest> {
  const digest = digestOf(data);
  const ingest = await store.openIngest(digest);
  await ingest.write(Readable.from([data]));
  await ingest.commit({ digest, size: data.length });
  return digest;
}

/** Reads a body as it comes, so a test can wait for "this many bytes received". */
function reading(body: Readable): { received: () => number; ended: Promise<Buffer | Error> } {
  const chunks: Buffer[] = [];
  let received = 0;
  const ended = (async () => {
    try {
      for await (const c of bodyChunks(body)) {
        chunks.push(Buffer.from(c)); // a copy: chunks of a direct body may be reused once given back
        received += c.length;
      }
      return Buffer.concat(chunks);
    } catch (err) {
      return err as Error;
    }
  })();
  return { received: () => received, ended };
}

/** A TCP server that answers every connection with `answer` (raw bytes), then does what `then` says. */
async function rawServer(answer: (socket: Socket) => void): Promise<{ host: string; server: Server }> {
  const server = createNetServer((socket) => {
    socket.on('error', () => undefined);
    socket.once('data', () => answer(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onTestFinished(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { host: `127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

const D = `sha256:${'a'.repeat(64)}` as Digest;

async function failure(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => new Error('expected a failure'),
    (err: unknown) => err,
  );
}

describe('a blob read directly from a peer', () => {
  it('is byte-identical over many megabyte chunks, the ingest giving them back to be reused, and verifies', async () => {
    const data = pseudoRandom(23 * 1024 * 1024 + 17, 41);
    const digest = await stored(src.store, data);
    const ingest = await dst.store.openIngest(digest);
    await ingest.write(await peerClient().getBlob('test/app', digest));
    await expect(ingest.commit({ digest, size: data.length })).resolves.toEqual({ digest, size: data.length });
    expect((await dst.store.readBytes(digest, 32 * 1024 * 1024)).equals(data)).toBe(true);
  });

  it('resumes with Range from an offset', async () => {
    const data = pseudoRandom(3 * 1024 * 1024 + 5, 42);
    const digest = await stored(src.store, data);
    const body = reading(await peerClient().getBlob('test/app', digest, { start: 1_000_001 }));
    const got = await body.ended;
    expect(Buffer.isBuffer(got) && got.equals(data.subarray(1_000_001))).toBe(true);
  });

  it('passes on bytes of a blob still arriving at once, without waiting for a chunk to fill, and its end once verified', async () => {
    const data = pseudoRandom(2 * 1024 * 1024 + 3, 43);
    const up = await arriving(src.store, data);
    up.feed.write(data.subarray(0, 1000));
    const body = reading(await peerClient().getBlob('test/app', up.digest));
    // A thousand bytes, far from a megabyte, and nothing more is coming until the test sends it.
    await until('the first bytes at the reader', async () => (body.received() === 1000 ? true : undefined));
    up.feed.end(data.subarray(1000));
    await up.written;
    await up.ingest.commit({ digest: up.digest, size: data.length });
    const got = await body.ended;
    expect(Buffer.isBuffer(got) && got.equals(data)).toBe(true);
  });

  it('fails its reader when the ingest it tails is aborted: never a short body that looks whole', async () => {
    const data = pseudoRandom(2 * 1024 * 1024, 44);
    const up = await arriving(src.store, data);
    up.feed.write(data.subarray(0, 300_000));
    const body = reading(await peerClient().getBlob('test/app', up.digest));
    await until('bytes at the reader', async () => (body.received() === 300_000 ? true : undefined));
    up.feed.destroy(new Error('ECONNRESET (simulated)'));
    await up.written;
    await up.ingest.abort();
    const got = await body.ended;
    expect(isStowageError(got, 'TRUNCATED')).toBe(true);
    expect(body.received()).toBe(300_000);
  });

  it('stops taking bytes from the socket while its reader does not read: the sender is held back', async () => {
    const mib = pseudoRandom(1024 * 1024, 45);
    const total = 256;
    let sent = 0;
    const server = createServer((_req, res) => {
      res.writeHead(200, { 'content-length': String(total * mib.length) });
      const more = (): void => {
        while (sent < total) {
          sent++;
          if (!res.write(mib)) return void res.once('drain', more);
        }
        res.end();
      };
      more();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    onTestFinished(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const res = await directGet(new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/blob`), { headers: {} });
    // Not read at all: what the sender got rid of stays at what the buffers on the way hold.
    let last = -1;
    await until('the sender to stall', async () => {
      const now = sent;
      const stalled = now === last;
      last = now;
      if (!stalled) await new Promise((r) => setTimeout(r, 300));
      return stalled ? true : undefined;
    });
    expect(sent).toBeLessThan(64);
    const hash = createHash('sha256');
    let n = 0;
    for await (const chunk of bodyChunks(res.body)) {
      hash.update(chunk);
      n += chunk.length;
    }
    expect(n).toBe(total * mib.length);
    const expected = createHash('sha256');
    for (let i = 0; i < total; i++) expected.update(mib);
    expect(hash.digest('hex')).toBe(expected.digest('hex'));
  });

  it('reuses a chunk only once the ingest gave it back', async () => {
    // What the ingest does with chunks marked reusable: each given back after its bytes reached the file.
    const data = pseudoRandom(5 * 1024 * 1024, 46);
    const given: number[] = [];
    const chunks = Array.from({ length: 5 }, (_, i) => markRecyclable(Buffer.from(data.subarray(i * 1024 * 1024, (i + 1) * 1024 * 1024)), () => given.push(i)));
    const digest = digestOf(data);
    const ingest = await dst.store.openIngest(digest);
    await ingest.write(Readable.from(chunks));
    expect(given.sort()).toEqual([0, 1, 2, 3, 4]);
    await expect(ingest.commit({ digest, size: data.length })).resolves.toEqual({ digest, size: data.length });
  });
});

describe('a peer that answers badly', () => {
  it('a cut in the middle of the body fails it TRUNCATED', async () => {
    const { host: at } = await rawServer((s) => s.end(`HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n${'x'.repeat(5000)}`));
    const body = reading(await peerClient(at).getBlob('test/app', D));
    const got = await body.ended;
    expect(isStowageError(got, 'TRUNCATED')).toBe(true);
    expect(body.received()).toBe(5000);
  });

  it('a connection closed before an answer is REGISTRY_ERROR (the next source is tried)', async () => {
    const { host: at } = await rawServer((s) => s.destroy());
    const err = await failure(peerClient(at).getBlob('test/app', D));
    expect(isStowageError(err, 'REGISTRY_ERROR')).toBe(true);
    expect((err as Error).message).toMatch(/cannot reach registry/);
  });

  it('a chunked body, a head without end, an answer that is not HTTP and a bad Content-Length are refused', async () => {
    const answers = [
      'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
      `HTTP/1.1 200 OK\r\n${'x-filler: y\r\n'.repeat(8000)}`,
      'SSH-2.0-OpenSSH_9.2\r\n\r\n',
      'HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n',
    ];
    for (const answer of answers) {
      const { host: at } = await rawServer((s) => s.end(answer));
      const err = await failure(peerClient(at).getBlob('test/app', D));
      expect(isStowageError(err, 'REGISTRY_ERROR'), `${answer.slice(0, 40)}: ${String(err)}`).toBe(true);
    }
  });

  it('a refused peer token is UNAUTHORIZED, a missing blob BLOB_NOT_FOUND with the peer\'s message', async () => {
    const { host: refusing } = await rawServer((s) =>
      s.end('HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}'),
    );
    const denied = await failure(peerClient(refusing).getBlob('test/app', D));
    expect(isStowageError(denied, 'UNAUTHORIZED')).toBe(true);
    expect((denied as Error).message).toMatch(/refused the credentials/);
    const missing = await failure(peerClient().getBlob('test/app', D));
    expect(isStowageError(missing, 'BLOB_NOT_FOUND')).toBe(true);
  });

  it('a peer that sends no answer is cut by the signal, with its reason', async () => {
    const { host: at } = await rawServer(() => undefined);
    const controller = new AbortController();
    const pending = failure(peerClient(at).getBlob('test/app', D, { signal: controller.signal }));
    controller.abort(new Error('stalled (test)'));
    expect(((await pending) as Error).message).toBe('stalled (test)');
  });
});
