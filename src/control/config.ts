import { z } from 'zod';
import { loadConfigFile, parseConfig } from '../validation.js';
import { catalogSeedSchema } from './tenancy/seed.js';

/** The control plane's configuration file (JSON). Every field has an embedded default. */
export const controlConfigSchema = z
  .object({
    /** Where the SQLite state (unless `database` says otherwise), the secrets key and the bootstrap tokens live. */
    dataDir: z.string().min(1),
    /**
     * The state store: a SQLite file path (default <dataDir>/control.db) or a PostgreSQL URL
     * (postgres://user:password@host:port/database), which several control-plane replicas may share.
     */
    database: z.string().min(1).optional(),
    listen: z.object({ host: z.string().default('127.0.0.1'), port: z.number().int().min(0).max(65535).default(5070) }).default({}),
    /**
     * The key that seals machine secrets and registry passwords in the database (created, 0600, if
     * missing); default <dataDir>/secrets.key. Keep it out of database backups.
     */
    secretsKeyFile: z.string().min(1).optional(),
    /** The token agents join with; generated into <dataDir>/join.token when absent. */
    joinToken: z.string().min(16).optional(),
    /** How often agents send a heartbeat, and after how long without one a machine is offline. */
    heartbeatIntervalMs: z.number().int().min(100).default(5_000),
    offlineAfterMs: z.number().int().min(200).default(20_000),
    /**
     * After a restart, a machine not heard from since is `unknown` (never chosen) for this long, then
     * offline; work the restart interrupted waits this long for its machines to call in.
     */
    unknownAfterRestartMs: z.number().int().min(0).default(60_000),
    /**
     * This control plane's name among the replicas sharing a PostgreSQL database (the owner of the
     * operations it runs); default <hostname>:<listen port>, the same across restarts. Must differ per replica.
     */
    replicaId: z.string().min(1).max(200).optional(),
    /**
     * How long an operation stays with the replica running it without a renewal (renewed every third of
     * it): after a replica dies, another takes its operations over within about this long.
     */
    operationLeaseMs: z.number().int().min(300).default(30_000),
    /** Targets of one operation worked on at once. */
    targetConcurrency: z.number().int().min(1).max(256).default(16),
    /** How long stowctl has to finish a push upload before the operation fails. */
    uploadTimeoutMs: z.number().int().min(1_000).default(60 * 60 * 1000),
    /** Peer tokens minted for transfers live this long. */
    peerTokenTtlSeconds: z.number().int().min(10).default(3_600),
    /** Tokens the registry token service (GET /token) gives users for an agent's /v2/ live this long. */
    registryTokenTtlSeconds: z.number().int().min(10).max(86_400).default(900),
    /** Server-Sent Events: keepalive comments while quiet (idle proxies), and how close updates may come. */
    events: z
      .object({ keepaliveMs: z.number().int().min(10).default(15_000), throttleMs: z.number().int().min(0).default(200) })
      .default({}),
    /**
     * Registries, domains, groups and users, upserted at every start (nothing is deleted). API keys of
     * users it creates are written to <dataDir>/tokens/<name>.token.
     */
    seed: catalogSeedSchema.optional(),
    /** GET /metrics (Prometheus): an admin or superadmin API key is needed unless `anonymous` opens it to all. */
    metrics: z.object({ anonymous: z.boolean().default(false) }).strict().default({}),
    /**
     * Serve plain HTTP. Without it `stowd control` serves HTTPS with the certificates `stowd init` made in
     * the data directory, and refuses to start when there are none.
     */
    insecureHttp: z.boolean().default(false),
    /** Machine certificates signed for agents live this long; agents renew them at two thirds of it. */
    machineCertLifetimeSeconds: z.number().int().min(10).default(30 * 24 * 3600),
    /** The built dashboard served at /ui/ (`npm run build`); default: dist/web of this package. */
    webDir: z.string().min(1).optional(),
  })
  .strict();

export type ControlConfig = z.infer<typeof controlConfigSchema>;
export type ControlConfigInput = z.input<typeof controlConfigSchema>;

export function parseControlConfig(input: unknown): ControlConfig {
  return parseConfig(controlConfigSchema, input, 'control-plane configuration');
}

export function loadControlConfig(path: string): Promise<ControlConfig> {
  return loadConfigFile(path, 'control-plane configuration', parseControlConfig);
}
