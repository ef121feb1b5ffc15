import { mkdir } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import Fastify from 'fastify';
import { pino } from 'pino';
import { instrumentHttp, metricsRoute } from '../metrics/http.js';
import { buildEngineApp, listenEngine } from '../engine/server.js';
import type { EngineContext } from '../engine/context.js';
import { StowageError } from '../errors.js';
import { defaultPlatform, formatPlatform } from '../oci/platform.js';
import { type RegistryAuthorizer, RevocationSet, peerAuthorizer } from '../registry/peer-auth.js';
import { registryRoutes } from '../registry/routes.js';
import { openRuntime } from '../runtime/open.js';
import type { RuntimeAdapter } from '../runtime/runtime.js';
import { agentApiRoutes } from './agent-api.js';
import type { AgentConfig } from './config.js';
import { ControlLink } from './control-link.js';
import { startIngestSweeper } from './ingest-sweeper.js';
import { cachedStoreUsage } from './disk-usage.js';
import { type Identity, identityPath, readIdentity } from './identity.js';
import { ensurePrivateDir, restrictFilesSync } from '../private-files.js';
import { IncomingUploads } from './incoming.js';
import { type RunningMirror, startMirror } from './mirror-server.js';
import { AgentMetrics, metricsAuthorizer } from './metrics.js';
import { RateLimiter } from './rate-limit.js';
import { TransferManager } from './transfers.js';
import { STOWAGE_VERSION } from './version.js';
import { MachineTls } from './machine-tls.js';
import { mutualTlsServer } from '../cluster/tls-server.js';

export interface RunningAgent {
  /** Base URL of the /v2/ endpoint (and of /agent/v1 when joined), as bound. */
  peerUrl: string;
  /** Where peers and the control plane reach this agent (config.advertiseUrl, else peerUrl). */
  advertiseUrl: string;
  /** Unix socket of the Docker Engine API (DOCKER_HOST=unix://…). */
  engineSocket: string;
  /** TCP address of the Docker Engine API when configured (DOCKER_HOST=tcp://…). */
  engineTcp: string | undefined;
  /** Base URL of the pull-through registry mirror, when configured. */
  mirrorUrl: string | undefined;
  /** The machine ID given by the control plane, once joined (undefined when standalone). */
  readonly machineId: string | undefined;
  /** Resolves once the control plane has acknowledged the inventory as it is now (immediately when standalone). */
  flushInventory(): Promise<void>;
  close(): Promise<void>;
}

export { STOWAGE_VERSION };

/** The stored identity when it is for the configured control plane; refuses a start that could never join. */
async function startingIdentity(config: AgentConfig): Promise<Identity | undefined> {
  const control = config.control;
  if (!control) return undefined;
  const stored = await readIdentity(config.dataDir);
  if (stored && stored.control_url === control.url) return stored;
  if (!control.joinToken) {
    const why = stored ? `${config.dataDir}/identity.json is for control plane ${stored.control_url}` : 'this machine has not joined yet';
    throw new StowageError('BAD_REQUEST', `cannot join control plane ${control.url}: ${why}, and no join token is configured (--join-token or STOWAGE_JOIN_TOKEN)`);
  }
  return undefined;
}

/**
 * Starts one machine's agent: its store, the /v2/ peer endpoint and the Docker Engine API; with `control`,
 * also the link to the control plane, the /agent/v1 API and peer-token authentication on /v2/.
 */
export async function startAgent(config: AgentConfig): Promise<RunningAgent> {
  let identity = await startingIdentity(config); // before anything is created: a start that cannot join changes nothing
  // The machine secret (identity.json) and the store live here: owner-only.
  await ensurePrivateDir(config.dataDir);
  restrictFilesSync([identityPath(config.dataDir)]);
  const runtime = await openRuntime(config.runtime, config.dataDir, (message) => console.error(`stowd agent: ${message}`));
  const { store, images } = runtime;
  const sweeper = await startIngestSweeper(store, {
    staleAfterMs: config.ingests.staleAfterMs,
    everyMs: config.ingests.sweepEveryMs,
    log: (message) => console.error(`stowd agent: ${message}`),
  });
  const workDir = join(config.dataDir, 'work');
  await mkdir(workDir, { recursive: true });
  const ctx: EngineContext = { store, images, registries: config.registries, workDir, version: STOWAGE_VERSION, maxImportBytes: config.engine.maxImportBytes, fetch: config.engine.fetch };

  const closers: Array<() => Promise<unknown>> = [];
  const closeAll = async (): Promise<void> => {
    // In reverse: the link and transfers stop before the servers and the store they use.
    for (const close of closers.reverse()) await close().catch(() => undefined);
    sweeper.stop();
    await runtime.close();
  };
  try {
    // Before the link starts: the first inventory it sends is what the runtime holds (a runtime that is
    // down is followed once it answers; the agent serves meanwhile).
    await runtime.start();
    let transfersRunning = (): number => 0;
    const metrics = new AgentMetrics({ running: () => transfersRunning(), inventoryImages: () => images.listImages().length });
    const log = pino({ level: process.env['STOWAGE_LOG_LEVEL'] ?? 'warn' }, process.stderr);
    /** The /v2/ (and /agent/v1) server; over mutual TLS when given a TLS server factory. */
    const peerServer = (tlsServer?: ReturnType<typeof mutualTlsServer>) => {
      const server = Fastify({ logger: false, ...(tlsServer ? { serverFactory: tlsServer.serverFactory } : {}) });
      closers.push(() => server.close());
      instrumentHttp(server, metrics, 'peer');
      return server;
    };
    let link: ControlLink | undefined;
    if (config.control) {
      // An https:// control plane means a TLS cluster: this machine serves /v2/ and /agent/v1 with the
      // certificate it gets on joining, to clients that present one from the cluster CA.
      const tls = config.control.url.startsWith('https:')
        ? await MachineTls.open({
            dataDir: config.dataDir,
            controlUrl: config.control.url,
            joinToken: config.control.joinToken,
            identity: () => identity,
            log: (message) => console.error(`stowd agent: ${message}`),
          })
        : undefined;
      if (tls) closers.push(() => tls.close());
      const peerTls = tls && mutualTlsServer(tls.certificate);
      if (tls && peerTls) tls.onCertificate((c) => peerTls.setCertificate(c));
      const peer = peerServer(peerTls);
      const limiter = config.transfer.maxBytesPerSecond ? new RateLimiter(config.transfer.maxBytesPerSecond) : undefined;
      const transfers = new TransferManager({
        store,
        images,
        runtime,
        limiter,
        concurrency: config.transfer.concurrency,
        stallTimeoutMs: config.transfer.stallTimeoutMs,
        peerTls: tls && (() => tls.peerClient()),
        metrics,
        log,
      });
      transfersRunning = () => transfers.runningCount;
      closers.push(() => transfers.close());
      // Until the machine has joined, /v2/ and /agent/v1 refuse everyone: there is no secret to check yet.
      // Tokens of revoked API keys and ended operations, refused though their signature holds.
      const revoked = new RevocationSet();
      let authorizer: RegistryAuthorizer | undefined = identity && peerAuthorizer(identity.machine_id, identity.machine_secret, revoked);
      const setIdentity = (next: Identity): void => {
        identity = next;
        authorizer = peerAuthorizer(next.machine_id, next.machine_secret, revoked);
      };
      // Standard clients get their token from the control plane's token service (the Docker/OCI token flow).
      const tokenRealm = `${config.control.url.replace(/\/+$/, '')}/token`;
      const served = { blobBytes: 0 };
      let mirror: RunningMirror | undefined;
      // Announced pushes need a store that serves blobs while they arrive. containerd's cannot: a target sent
      // ahead would find a layer not there yet, fail, and be pulled again, reporting only its second attempt's
      // bytes. Such an agent takes no announcement, and the other targets pull once the upload is whole.
      const incoming = store.expectBlob ? new IncomingUploads(store, log) : undefined;
      if (incoming) closers.push(async () => incoming.close());
      await peer.register(registryRoutes, {
        store,
        images,
        pendingManifest: (digest) => incoming?.manifest(digest),
        authorize: (authorization, need) => authorizer?.(authorization, need) ?? false,
        tokenService: () => (identity ? { realm: tokenRealm, service: identity.machine_id } : undefined),
        onBlobBytesServed: (n) => {
          served.blobBytes += n;
          metrics.servedBytes.inc(n);
        },
      });
      metricsRoute(peer, metrics, await metricsAuthorizer(config.metrics, () => identity?.machine_secret));
      await peer.register(agentApiRoutes, {
        prefix: '/agent/v1',
        secret: () => identity?.machine_secret,
        store,
        images,
        runtime,
        transfers,
        incoming,
        inventorySeq: () => link?.inventorySeq ?? 0,
        revoke: (tokens) => revoked.add(tokens),
        stats: () => ({
          blob_bytes_served: served.blobBytes,
          ...(mirror
            ? {
                mirror_bytes_from_peers: mirror.mirror.stats.bytesFromPeers,
                mirror_bytes_from_upstream: mirror.mirror.stats.bytesFromUpstream,
                mirror_blobs_from_peers: mirror.mirror.stats.blobsFromPeers,
                mirror_blobs_from_upstream: mirror.mirror.stats.blobsFromUpstream,
              }
            : {}),
        }),
      });
      let peerAddress = await peer.listen({ host: config.peer.host, port: config.peer.port });
      if (tls) peerAddress = peerAddress.replace(/^http:/, 'https:');
      const advertiseUrl = config.advertiseUrl ?? defaultAdvertiseUrl(config.peer.host, peer.server.address(), tls ? 'https' : 'http');
      const control = config.control;
      link = new ControlLink({
        dataDir: config.dataDir,
        controlUrl: control.url,
        joinToken: control.joinToken,
        name: control.name,
        info: {
          agent_url: advertiseUrl,
          platform: formatPlatform(defaultPlatform()),
          labels: control.labels,
          ...(control.scalingGroup ? { scaling_group: control.scalingGroup } : {}),
          version: STOWAGE_VERSION,
        },
        images,
        runtime,
        identity,
        heartbeatMs: control.heartbeatMs,
        diskUsage: cachedStoreUsage(store),
        onIdentity: setIdentity,
        onRevoked: (tokens) => revoked.add(tokens),
        ...(tls ? { dispatcher: () => tls.controlDispatcher(), certificates: tls } : {}),
      });
      // A machine that joined earlier renews its certificate when due (at once when it has none left).
      if (tls && identity) tls.scheduleRenewal(tls.certificate ? undefined : 0);
      const running = link;
      closers.push(() => running.close());
      link.start();
      if (config.mirror) {
        // Blobs from the machines the control plane says hold them, before the upstream registry.
        mirror = await startMirror(config.mirror, ctx, (digests) => running.blobSources(digests), {
          stallTimeoutMs: config.transfer.stallTimeoutMs,
          log: agentLog,
          peerTls: tls && (() => tls.peerClient()),
          metrics,
        });
        const started = mirror;
        closers.push(() => started.close());
      }
      return await startEngine(config, ctx, closers, closeAll, peerAddress, advertiseUrl, running, mirror?.url, tls, metrics);
    }
    const peer = peerServer();
    await peer.register(registryRoutes, { store, images, onBlobBytesServed: (n) => metrics.servedBytes.inc(n) });
    metricsRoute(peer, metrics, await metricsAuthorizer(config.metrics, () => undefined));
    const peerAddress = await peer.listen({ host: config.peer.host, port: config.peer.port });
    let mirrorUrl: string | undefined;
    if (config.mirror) {
      // Standalone: no peers to ask, a caching mirror of the upstream registry.
      const standalone = await startMirror(config.mirror, ctx, async () => ({}), { stallTimeoutMs: config.transfer.stallTimeoutMs, log: agentLog, metrics });
      closers.push(() => standalone.close());
      mirrorUrl = standalone.url;
    }
    return await startEngine(config, ctx, closers, closeAll, peerAddress, config.advertiseUrl ?? defaultAdvertiseUrl(config.peer.host, peer.server.address(), 'http'), undefined, mirrorUrl, undefined, metrics);
  } catch (err) {
    await closeAll();
    throw err;
  }
}

function agentLog(line: string): void {
  console.error(`stowd agent: ${line}`);
}

/** http(s)://<peer.host>:<bound port>: what peers reach when nothing else is configured. */
function defaultAdvertiseUrl(host: string, address: AddressInfo | string | null, scheme: 'http' | 'https'): string {
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

async function startEngine(
  config: AgentConfig,
  ctx: EngineContext,
  closers: Array<() => Promise<unknown>>,
  closeAll: () => Promise<void>,
  peerUrl: string,
  advertiseUrl: string,
  link: ControlLink | undefined,
  mirrorUrl: string | undefined,
  tls: MachineTls | undefined,
  metrics: AgentMetrics,
): Promise<RunningAgent> {
  const engineSocket = config.engine.socketPath ?? join(config.dataDir, 'docker.sock');
  const engineApp = await buildEngineApp(ctx, { instrument: (app) => instrumentHttp(app, metrics, 'docker') });
  const tcp = config.engine.tcp;
  if (tcp?.tlsVerify && !tls) {
    throw new StowageError('BAD_REQUEST', 'the Docker API over TCP with TLS (tlsVerify) needs a machine certificate: join an https:// control plane');
  }
  const engine = await listenEngine(engineApp, {
    socketPath: engineSocket,
    ...(tcp ? { tcp: { host: tcp.host, port: tcp.port } } : {}),
    ...(tcp?.tlsVerify && tls ? { tls: tls.certificate ?? null } : {}),
  });
  if (tcp?.tlsVerify && tls) tls.onCertificate((c) => engine.setCertificate(c));
  closers.push(() => engine.close());
  return {
    peerUrl,
    advertiseUrl,
    engineSocket,
    engineTcp: engine.addresses.find((a) => a.startsWith('tcp://')),
    mirrorUrl,
    get machineId() {
      return link?.machineId;
    },
    flushInventory: () => (link ? link.flushInventory() : Promise.resolve()),
    close: closeAll,
  };
}
