import type { PeerTlsClient } from '../cluster/tls-client.js';
import Fastify from 'fastify';
import type { EngineContext } from '../engine/context.js';
import { registryClientFor } from '../engine/registry-auth.js';
import type { Digest } from '../oci/digest.js';
import { type PeerHolder, PullThroughMirror } from '../registry/mirror.js';
import { mirrorRoutes } from '../registry/mirror-routes.js';
import type { AgentConfig } from './config.js';
import type { AgentMetrics } from './metrics.js';

/** The agent's pull-through registry mirror (registry/mirror.ts) on its own loopback listener. */
export interface RunningMirror {
  mirror: PullThroughMirror;
  /** http://<host>:<port>, what hosts.toml and registry-mirrors name. */
  url: string;
  close(): Promise<void>;
}

export async function startMirror(
  config: NonNullable<AgentConfig['mirror']>,
  ctx: EngineContext,
  holders: (digests: readonly Digest[]) => Promise<Record<string, PeerHolder[] | undefined>>,
  opts: {
    stallTimeoutMs?: number | undefined;
    log: (line: string) => void;
    peerTls?: (() => PeerTlsClient | undefined) | undefined;
    metrics?: Pick<AgentMetrics, 'mirrorBytes' | 'mirrorBlobs'> | undefined;
  },
): Promise<RunningMirror> {
  const mirror = new PullThroughMirror({
    store: ctx.store,
    // The agent's configured credentials and insecure registries, as its own pulls use them.
    upstream: (host) => registryClientFor(ctx, host, undefined),
    holders,
    stallTimeoutMs: opts.stallTimeoutMs,
    log: opts.log,
    peerTls: opts.peerTls,
    onBlobBytes: (n, from) => opts.metrics?.mirrorBytes.inc({ source: from }, n),
    onBlobStored: (from) => opts.metrics?.mirrorBlobs.inc({ source: from }),
  });
  const app = Fastify({ logger: false });
  await app.register(mirrorRoutes, { mirror, defaultUpstream: config.defaultUpstream });
  await app.listen({ host: config.host, port: config.port });
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : config.port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  return { mirror, url: `http://${host}:${port}`, close: () => app.close() };
}
