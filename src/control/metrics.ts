import { sql } from 'kysely';
import { Counter, Gauge, Histogram } from 'prom-client';
import { DURATION_BUCKETS, MetricsRegistry } from '../metrics/registry.js';
import type { Db } from './db/database.js';
import type { Machines } from './machines.js';

interface InventoryRow {
  machine: string;
  images: number;
  bytes: number;
}

/**
 * The control plane's Prometheus series. Counters and histograms are fed by the operation runner as work
 * happens; gauges (operations, machines, inventories) are read from the state store at each scrape, so
 * they are right after a restart and whichever code path changed the rows.
 */
export class ControlMetrics extends MetricsRegistry {
  /** Image bytes targets received, by the operation's source machine (or registry) and the target machine. */
  readonly transferBytes = new Counter({
    name: 'stowage_transfer_bytes_total',
    help: 'Image bytes moved onto target machines, by source and target',
    labelNames: ['source', 'target'] as const,
    registers: [this.registry],
  });
  readonly transferDuration = new Histogram({
    name: 'stowage_transfer_duration_seconds',
    help: 'Time one target of an operation took, from its request to the agent to its result, by outcome',
    labelNames: ['kind', 'status'] as const,
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  readonly operationDuration = new Histogram({
    name: 'stowage_operation_duration_seconds',
    help: 'Time from an operation being created to its end, by kind and final status',
    labelNames: ['kind', 'status'] as const,
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  readonly operationsEnded = new Counter({
    name: 'stowage_operations_ended_total',
    help: 'Operations that ended in this process, by kind and final status',
    labelNames: ['kind', 'status'] as const,
    registers: [this.registry],
  });

  constructor(db: Db, machines: Machines) {
    super();
    new Gauge({
      name: 'stowage_operations',
      help: 'Operations in the state store, by kind and status',
      labelNames: ['kind', 'status'] as const,
      registers: [this.registry],
      async collect() {
        const rows = await db.all<{ kind: string; status: string; n: number }>(sql`SELECT kind, status, COUNT(*) AS n FROM operations GROUP BY kind, status`);
        this.reset();
        for (const r of rows) this.set({ kind: r.kind, status: r.status }, Number(r.n));
      },
    });
    new Gauge({
      name: 'stowage_machines',
      help: 'Machines by status',
      labelNames: ['status'] as const,
      registers: [this.registry],
      async collect() {
        const counts: Record<string, number> = { online: 0, offline: 0, unknown: 0 };
        for (const status of (await machines.statuses()).values()) counts[status] = (counts[status] ?? 0) + 1;
        for (const [status, n] of Object.entries(counts)) this.set({ status }, n);
      },
    });
    // One read per scrape feeds both inventory gauges (the covering index availability_inventory makes it
    // an index scan); machines that hold nothing show 0.
    const readInventories = async (): Promise<InventoryRow[]> => {
      const rows = await db.all<InventoryRow>(
        sql`SELECT machine_id AS machine, COUNT(*) AS images, SUM(size_bytes) AS bytes FROM availability WHERE state = 'present' GROUP BY machine_id`,
      );
      const held = new Map(rows.map((r) => [r.machine, { machine: r.machine, images: Number(r.images), bytes: Number(r.bytes) }]));
      const ids = await db.all<{ id: string }>(sql`SELECT id FROM machines`);
      return ids.map((m) => held.get(m.id) ?? { machine: m.id, images: 0, bytes: 0 });
    };
    // The registry starts collecting in registration order: the images gauge starts the read, the bytes gauge awaits that same read.
    let read: Promise<InventoryRow[]> | undefined;
    new Gauge({
      name: 'stowage_inventory_images',
      help: 'Platform images each machine reports holding',
      labelNames: ['machine'] as const,
      registers: [this.registry],
      async collect() {
        read = readInventories();
        const rows = await read;
        this.reset();
        for (const r of rows) this.set({ machine: r.machine }, r.images);
      },
    });
    new Gauge({
      name: 'stowage_inventory_bytes',
      help: 'Sum of the sizes of the images each machine reports holding',
      labelNames: ['machine'] as const,
      registers: [this.registry],
      async collect() {
        const rows = await (read ?? readInventories());
        read = undefined;
        this.reset();
        for (const r of rows) this.set({ machine: r.machine }, r.bytes);
      },
    });
  }
}
