import type { AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import Fastify from 'fastify';
import { expect, onTestFinished } from 'vitest';
import { type Digest, digestOf } from '../../src/oci/digest.js';
import { registryRoutes } from '../../src/registry/routes.js';
import type { ContentStoreApi, Ingest } from '../../src/store/types.js';
import type { FreshStore } from './store.js';

/** A store served by the registry routes on a loopback port, as a machine's /v2/ serves it (open, no auth). */
export async function serveV2(served: Pick<FreshStore, 'store' | 'images'>): Promise<{ host: string; close: () => Promise<void> }> {
  const app = Fastify();
  await app.register(async (scope) => registryRoutes(scope, { store: served.store, images: served.images }));
  await app.listen({ host: '127.0.0.1', port: 0 });
  return { host: `127.0.0.1:${(app.server.address() as AddressInfo).port}`, close: () => app.close() };
}

/**
 * An ingest of `data`'s digest on a serving machine, fed by hand through `feed`, announced as a transfer
 * announces the blobs it plans to fetch (with their sizes): what has "arrived" is decided by the test.
 */
export async function arriving(
  store: ContentStoreApi,
  data: Buffer,
): Promise<{ digest: Digest; ingest: Ingest; feed: PassThrough; written: Promise<unknown>; release: () => void }> {
  const digest = digestOf(data);
  const release = store.expectBlob?.(digest, data.length);
  expect(release).toBeDefined();
  const ingest = await store.openIngest(digest);
  const feed = new PassThrough();
  const written = ingest.write(feed).catch((err: unknown) => err);
  // The transfer ends (committed or given up) after the test is done with the ingest.
  onTestFinished(() => release?.());
  return { digest, ingest, feed, written, release: () => release?.() };
}
