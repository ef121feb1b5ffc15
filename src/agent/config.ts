import { z } from 'zod';
import { loadConfigFile, parseConfig } from '../validation.js';
import { isLoopbackHost } from '../registry/client.js';
import { DEFAULT_FETCH_MAX_BYTES } from '../engine/fetch-policy.js';

const hostPort = z.string().regex(/^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9a-fA-F:]+\](:\d{1,5})?$/, 'expected host[:port]');

const httpUrl = z
  .string()
  .url()
  .refine((u) => /^https?:\/\//.test(u), { message: 'expected an http:// or https:// URL' })
  .transform((u) => u.replace(/\/+$/, ''));

const listenSchema = z.object({
  host: z.string().default('127.0.0.1'),
  port: z.number().int().min(0).max(65535),
});

/** An agent's configuration file (JSON). Every field has an embedded default. */
export const agentConfigSchema = z
  .object({
    /** Where the content store and image records live. */
    dataDir: z.string().min(1),
    /** The read-only OCI distribution endpoint (/v2/) that peers and standard tools pull from. */
    peer: listenSchema.default({ host: '127.0.0.1', port: 0 }),
    /** The Docker Engine API. The unix socket defaults to <dataDir>/docker.sock; TCP is off unless set. */
    engine: z
      .object({
        socketPath: z.string().optional(),
        // The Docker Engine API can write to the store. Over TCP it authenticates clients only by TLS client
        // certificates from the cluster CA (tlsVerify, as dockerd's --tlsverify); without that it may only
        // face this machine: no open door.
        tcp: listenSchema
          .extend({ tlsVerify: z.boolean().optional() })
          .refine((l) => l.tlsVerify || isLoopbackHost(l.host), {
            message: 'the Docker Engine API TCP listener must bind a loopback address (127.0.0.0/8, ::1 or localhost) unless it requires TLS client certificates (tlsVerify)',
          })
          .optional(),
        /** Largest uncompressed root filesystem `docker import` takes (default 64 GiB). */
        maxImportBytes: z.number().int().positive().optional(),
        /** What `docker import <url>` and `ADD <url>` may download (see src/engine/fetch-policy.ts). */
        fetch: z
          .object({
            /** IPs, CIDRs or host[:port]s exempt from the refusal of loopback, link-local and private addresses. */
            allow: z.array(z.string().min(1)).default([]),
            maxBytes: z.number().int().positive().default(DEFAULT_FETCH_MAX_BYTES),
          })
          .optional(),
      })
      .default({}),
    registries: z
      .object({
        insecureRegistries: z.array(hostPort).default([]),
        credentials: z.record(hostPort, z.object({ username: z.string(), password: z.string() })).default({}),
        searchRegistries: z.array(hostPort).default([]),
      })
      .default({}),
    /** The control plane to join; without it the agent runs standalone. */
    control: z
      .object({
        url: httpUrl,
        /** Needed for the first join (and to join again when the stored machine secret is refused). */
        joinToken: z.string().min(1).optional(),
        /** Requested machine ID. */
        name: z
          .string()
          .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'machine names are lowercase letters, digits and dashes, up to 63')
          .optional(),
        labels: z.record(z.string().max(256)).default({}),
        scalingGroup: z.string().min(1).max(64).optional(),
        /** Until the control plane names its own interval. */
        heartbeatMs: z.number().int().min(100).optional(),
      })
      .strict()
      .optional(),
    /**
     * Abandoned ingests (partial files of killed imports and transfers) are collected at start and every
     * `sweepEveryMs`; a resumable one is kept until untouched for `staleAfterMs`.
     */
    ingests: z
      .object({
        staleAfterMs: z.number().int().min(0).default(60 * 60 * 1000),
        sweepEveryMs: z.number().int().min(100).default(10 * 60 * 1000),
      })
      .strict()
      .default({}),
    /** Where peers and the control plane reach /v2/ and /agent/v1; default http://<peer.host>:<port>. */
    advertiseUrl: httpUrl.optional(),
    /** Where images land: Stowage's own store (none) or the machine's container runtime. */
    runtime: z
      .object({
        kind: z.enum(['none', 'containerd', 'docker']).default('none'),
        containerd: z
          .object({
            socket: z.string().min(1).default('/run/containerd/containerd.sock'),
            /** k8s.io is the namespace the kubelet's CRI plugin uses: images land where pods start from. */
            namespace: z
              .string()
              .regex(/^[A-Za-z0-9]([A-Za-z0-9._-]{0,75}[A-Za-z0-9])?$/, 'a containerd namespace: letters, digits, dots, dashes, underscores')
              .default('k8s.io'),
            snapshotter: z.string().regex(/^[a-z0-9_-]{1,64}$/).default('overlayfs'),
          })
          .strict()
          .default({}),
        /** A Docker Engine, or Podman's Docker-compatible service (podman system service). */
        docker: z
          .object({ socket: z.string().min(1).default('/var/run/docker.sock') })
          .strict()
          .default({}),
      })
      .strict()
      .default({}),
    /**
     * A pull-through registry mirror for this machine's container runtime (containerd hosts.toml, Docker
     * registry-mirrors): blobs from peers that hold them, the rest from the upstream registry. Anonymous, so
     * it binds loopback only.
     */
    mirror: z
      .object({
        host: z.string().default('127.0.0.1'),
        port: z.number().int().min(0).max(65535),
        /** The registry asked when a request names none (Docker's mirrors are Docker Hub's; containerd sends ?ns=). */
        defaultUpstream: hostPort.default('docker.io'),
      })
      .strict()
      .refine((m) => isLoopbackHost(m.host), {
        message: 'the registry mirror is anonymous and must bind a loopback address (127.0.0.0/8, ::1 or localhost)',
      })
      .optional(),
    /**
     * GET /metrics (Prometheus) on the peer endpoint: open to the control plane's machine credentials (the
     * machine secret as Bearer), to the token in `tokenFile` (a scraper's), or to anyone with `anonymous`.
     */
    metrics: z
      .object({ anonymous: z.boolean().default(false), tokenFile: z.string().min(1).optional() })
      .strict()
      .default({}),
    transfer: z
      .object({
        /** A cap on the bytes per second all transfers into this machine download together. */
        maxBytesPerSecond: z.number().int().positive().optional(),
        /** Blobs one transfer downloads at once (default 3). */
        concurrency: z.number().int().min(1).max(64).optional(),
        /** A blob download that receives nothing this long is resumed from the next source (default 30000). */
        stallTimeoutMs: z.number().int().min(100).optional(),
      })
      .strict()
      .default({}),
  })
  .strict();

export type AgentConfig = z.infer<typeof agentConfigSchema>;
export type AgentConfigInput = z.input<typeof agentConfigSchema>;

export function parseAgentConfig(input: unknown): AgentConfig {
  return parseConfig(agentConfigSchema, input, 'agent configuration');
}

export function loadAgentConfig(path: string): Promise<AgentConfig> {
  return loadConfigFile(path, 'agent configuration', parseAgentConfig);
}
