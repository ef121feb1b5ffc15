import { readFile } from 'node:fs/promises';
import type { FastifyRequest } from 'fastify';
import { Counter, Gauge, Histogram } from 'prom-client';
import { bearerToken } from '../control/auth/api-keys.js';
import { secretsEqual } from '../control/peer-token.js';
import { StowageError } from '../errors.js';
import { DURATION_BUCKETS, MetricsRegistry } from '../metrics/registry.js';

/** An agent's Prometheus series: what it received (by source), what it served to peers, its transfers. */
export class AgentMetrics extends MetricsRegistry {
  readonly receivedBytes = new Counter({
    name: 'stowage_agent_received_bytes_total',
    help: 'Blob bytes this machine downloaded in transfers, by the peer or registry (host:port) that sent them',
    labelNames: ['source'] as const,
    registers: [this.registry],
  });
  readonly servedBytes = new Counter({
    name: 'stowage_agent_served_bytes_total',
    help: "Blob bytes this machine's /v2/ sent to peers and clients",
    registers: [this.registry],
  });
  readonly mirrorBytes = new Counter({
    name: 'stowage_agent_mirror_bytes_total',
    help: 'Blob bytes the pull-through mirror brought in, by where they came from (peer or upstream)',
    labelNames: ['source'] as const,
    registers: [this.registry],
  });
  readonly mirrorBlobs = new Counter({
    name: 'stowage_agent_mirror_blobs_total',
    help: 'Blobs the pull-through mirror brought in whole and verified, by where their last bytes came from (peer or upstream)',
    labelNames: ['source'] as const,
    registers: [this.registry],
  });
  readonly transfers = new Counter({
    name: 'stowage_agent_transfers_total',
    help: 'Transfers into this machine that ended, by outcome (present, skipped_present, failed)',
    labelNames: ['status'] as const,
    registers: [this.registry],
  });
  readonly transferDuration = new Histogram({
    name: 'stowage_agent_transfer_duration_seconds',
    help: 'Time a transfer into this machine took, by outcome',
    labelNames: ['status'] as const,
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });

  /** `running` and `inventory` are read at each scrape. */
  constructor(read: { running: () => number; inventoryImages: () => number }) {
    super();
    new Gauge({
      name: 'stowage_agent_transfers_running',
      help: 'Transfers into this machine under way',
      registers: [this.registry],
      collect() {
        this.set(read.running());
      },
    });
    new Gauge({
      name: 'stowage_agent_inventory_images',
      help: 'Platform images this machine holds',
      registers: [this.registry],
      collect() {
        this.set(read.inventoryImages());
      },
    });
  }
}

/**
 * Who may read an agent's /metrics: anyone with `anonymous`; else a Bearer equal to the machine secret (the
 * control plane's credential for this machine) or to the scraper token read from `tokenFile` at start.
 */
export async function metricsAuthorizer(
  config: { anonymous: boolean; tokenFile?: string | undefined },
  machineSecret: () => string | undefined,
): Promise<(request: FastifyRequest) => void> {
  const token = config.tokenFile ? (await readFile(config.tokenFile, 'utf8')).trim() : undefined;
  if (token !== undefined && token.length < 16) throw new StowageError('BAD_REQUEST', `metrics.tokenFile ${config.tokenFile} holds a token shorter than 16 characters`);
  return (request) => {
    if (config.anonymous) return;
    const presented = bearerToken(request.headers.authorization);
    const secret = machineSecret();
    const ok = presented !== undefined && ((secret !== undefined && secretsEqual(presented, secret)) || (token !== undefined && secretsEqual(presented, token)));
    if (!ok) throw new StowageError('UNAUTHORIZED', 'metrics need the machine secret or the metrics token (Authorization: Bearer …)');
  };
}
