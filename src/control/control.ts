import { chmod, readFile, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { type Logger, pino } from 'pino';
import { AgentsClient } from './agents-client.js';
import { type Principal, authenticateApiKey, createApiKey, createUser, userByName } from './auth/api-keys.js';
import { AvailabilityStore } from './availability.js';
import type { ControlConfig } from './config.js';
import type { ControlContext } from './context.js';
import { type Db, openDatabase } from './db/database.js';
import { Machines } from './machines.js';
import { ControlMetrics } from './metrics.js';
import { runDistribute } from './operations/distribute.js';
import { UploadWaiters, runPush } from './operations/push.js';
import { OperationRunner } from './operations/runner.js';
import { OperationStore } from './operations/store.js';
import { newSecret } from './peer-token.js';
import { buildControlApp } from './server.js';
import { RegistryStore } from './catalog/registries.js';
import { Revocations } from './auth/revocations.js';
import { ensurePrivateDir } from '../private-files.js';
import './catalog/schema.js';
import './tenancy/schema.js';
import './tasks/ids.js';
import { KeypairStore } from './tenancy/keypairs.js';
import { hasClusterCa, loadControlTls } from '../cluster/tls-files.js';
import { clusterDispatcher } from '../cluster/tls-client.js';
import { applyCatalogSeed } from './tenancy/seed.js';
import { type EventBus, LocalEventBus, PostgresEventBus } from './replicas/event-bus.js';
import { OperationLeases } from './replicas/leases.js';
import { relayReplicaEvents } from './replicas/relay.js';

/** How long a stop may take before it gives up on what it still waits for (see close). */
const SHUTDOWN_GRACE_MS = 15_000;

export interface RunningControl {
  url: string;
  /** The superadmin API token created at first start (read back from <dataDir>/admin.token later). */
  adminToken: string;
  joinToken: string;
  ctx: ControlContext;
  /** Operations picked up again at start. */
  resumed: number;
  /** This control plane's name among replicas (the owner of the operations it runs). */
  replica: string;
  close(): Promise<void>;
}

/** Reads a secret kept in a 0600 file under the data dir, creating it the first time. */
async function fileSecret(path: string, create: () => string | Promise<string>): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const value = await create();
  await writeFile(path, `${value}\n`, { mode: 0o600, flag: 'wx' });
  await chmod(path, 0o600);
  return value;
}

/** Starts the control plane: state, API, and the operations a previous run left unfinished. */
export async function startControl(config: ControlConfig): Promise<RunningControl> {
  await ensurePrivateDir(config.dataDir);
  const log = pino({ level: process.env['STOWAGE_LOG_LEVEL'] ?? 'warn' }, process.stderr);
  const db = await openDatabase(config.database ?? join(config.dataDir, 'control.db'), { secretsKeyFile: config.secretsKeyFile, dataDir: config.dataDir });
  try {
    return await startOn(db, config, log);
  } catch (err) {
    await db.close();
    throw err;
  }
}

async function startOn(db: Db, config: ControlConfig, log: Logger): Promise<RunningControl> {
  await new RegistryStore(db).sealPlainPasswords();
  const machines = new Machines(db, config.offlineAfterMs, config.unknownAfterRestartMs);
  await machines.sealPlainSecrets();
  machines.onWriteLost = (err) => log.warn({ err }, 'a heartbeat could not be recorded (disk full); the machine stays online from memory');
  machines.onBatchFailed = (err) => log.warn({ err }, 'heartbeats could not be written together; written one by one');
  const availability = new AvailabilityStore(db, machines);
  // Several replicas may share a PostgreSQL database: each runs the operations it holds the lease of.
  const replica = config.replicaId ?? `${hostname()}:${config.listen.port === 0 ? `pid-${process.pid}` : config.listen.port}`;
  const leases = new OperationLeases(db, replica, config.operationLeaseMs);
  const operations = new OperationStore(db, () => leases.newLease());
  // TLS once `stowd init` made the cluster CA here (unless plain HTTP is asked for explicitly).
  const tlsMaterial = !config.insecureHttp && (await hasClusterCa(config.dataDir)) ? await loadControlTls(config.dataDir) : undefined;
  const clientTls = tlsMaterial && { ca: tlsMaterial.ca.certPem, cert: tlsMaterial.server.certPem, key: tlsMaterial.server.keyPem };
  const agents = new AgentsClient(clientTls ? { tls: clientTls } : {});
  const metrics = new ControlMetrics(db, machines);
  const runner = new OperationRunner(operations, availability, agents, log, config.targetConcurrency, metrics, leases);
  // Kept as long as the longest-lived token it may refuse, plus a margin for clocks.
  const tokenLifetimeMs = Math.max(config.registryTokenTtlSeconds * 1000, config.peerTokenTtlSeconds * 1000, config.uploadTimeoutMs) + 5 * 60_000;
  const revocations = new Revocations(db, agents, async () => (await machines.list()).filter((m) => m.status === 'online'), log, tokenLifetimeMs);
  await revocations.load();
  // An operation's peer grants (stowctl's upload grant, transfer pull tokens) end with it.
  runner.onEnded = (opId) => void revocations.revokeOperation(opId).catch((err: unknown) => log.warn({ err, operation_id: opId }, 'revoking the grants of an ended operation failed'));
  const ctx: ControlContext = { config, db, machines, availability, operations, runner, uploads: new UploadWaiters(), log, metrics, revocations };
  if (tlsMaterial && clientTls) ctx.tls = { ...tlsMaterial, agentDispatcher: clusterDispatcher(clientTls) };
  runner.register('distribute', (id) => runDistribute(ctx, id));
  runner.register('push', (id) => runPush(ctx, id));

  const joinToken = config.joinToken ?? (await fileSecret(join(config.dataDir, 'join.token'), () => newSecret('sjt_')));
  const admin = async (): Promise<Principal> => (await userByName(db, 'admin')) ?? createUser(db, { name: 'admin', role: 'superadmin' });
  const adminToken = await fileSecret(join(config.dataDir, 'admin.token'), async () => createApiKey(db, (await admin()).userId));
  // A database restored from an older backup (or lost) must not lock the operator out of a token on disk.
  if (!(await authenticateApiKey(db, adminToken))) await createApiKey(db, (await admin()).userId, adminToken);

  // The superadmin's Backend.AI keypair, made once beside its token (its secret is shown nowhere else).
  const keypairs = new KeypairStore(db);
  await fileSecret(join(config.dataDir, 'admin.keypair'), async () => JSON.stringify(await keypairs.create((await admin()).userId)));

  if (config.seed) {
    const keys = await applyCatalogSeed(db, config.seed);
    await ensurePrivateDir(join(config.dataDir, 'tokens'));
    for (const [name, token] of Object.entries(keys)) {
      await writeFile(join(config.dataDir, 'tokens', `${name}.token`), `${token}\n`, { mode: 0o600 });
      const user = await userByName(db, name);
      if (user) await writeFile(join(config.dataDir, 'tokens', `${name}.keypair`), `${JSON.stringify(await keypairs.create(user.userId))}\n`, { mode: 0o600 });
    }
  }

  // Listening to the other replicas before anything is resumed or served: no event of theirs is missed.
  const bus: EventBus =
    db.dialect === 'postgres' && config.database ? await PostgresEventBus.open(config.database, db, replica, log.child({ replica })) : new LocalEventBus();
  relayReplicaEvents(bus, { operations, runner, uploads: ctx.uploads, revocations, log });
  let app: Awaited<ReturnType<typeof buildControlApp>>;
  try {
    app = await buildControlApp(ctx, joinToken);
  } catch (err) {
    await bus.close();
    throw err;
  }
  const resumed = await runner.resumeAll();
  const stopLeases = runner.keepLeases();
  let url: string;
  try {
    url = await app.listen({ host: config.listen.host, port: config.listen.port });
    // Fastify names the scheme after its own https option; the server here is made by a factory.
    if (ctx.tls) url = url.replace(/^http:/, 'https:');
    machines.listening();
  } catch (err) {
    await app.close();
    // Work resumed above stops writing; the caller closes the database under it.
    stopLeases();
    operations.freeze();
    availability.freeze();
    await bus.close();
    throw err;
  }
  return {
    url,
    adminToken,
    joinToken,
    ctx,
    resumed,
    replica,
    async close() {
      let step = 'closing the HTTP server';
      const freeze = (): void => {
        stopLeases();
        operations.freeze();
        availability.freeze();
      };
      const steps = async (): Promise<void> => {
        await app.close();
        // Like a crash, but tidy: work in flight stays pending/running in the database for the next start
        // (or for another replica, which takes it over at once: the leases are released once it has stopped here).
        freeze();
        ctx.uploads.closeAll();
        step = 'cutting the calls to agents';
        await agents.close();
        await ctx.tls?.agentDispatcher.close();
        step = 'waiting for the running operations to stop';
        await runner.idle();
        step = 'releasing the operation leases';
        await leases.releaseAll().catch((err: unknown) => log.warn({ err }, 'releasing the operation leases failed; other replicas take them when they expire'));
        step = "closing the replicas' event listener";
        await bus.close();
        step = 'closing the database';
        await db.close();
      };
      // A stop must not hang on what it waits for (a request or a peer that never ends, a stuck database
      // connection): after the grace period it gives up, with the store frozen, as a crash would leave it.
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), SHUTDOWN_GRACE_MS)));
      // Settles either way, so steps that fail after the grace period are no unhandled rejection.
      const finished = steps().then(
        () => 'done' as const,
        (err: unknown) => ({ err }),
      );
      const outcome = await Promise.race([finished, late]);
      clearTimeout(timer);
      if (typeof outcome === 'object') throw outcome.err;
      if (outcome === 'late') {
        freeze();
        log.error({ step, grace_ms: SHUTDOWN_GRACE_MS }, 'the control plane did not stop in time; stopping anyway (its work stays in the database for the next start)');
      }
    },
  };
}
