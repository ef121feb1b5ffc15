import { collectDefaultMetrics, Registry } from 'prom-client';

/**
 * One Prometheus registry per daemon (a control plane and its agents may share a process in tests and in
 * `stowd dev`, so nothing goes to prom-client's global registry). The process series (CPU, memory,
 * event-loop lag) are added on the first scrape: a daemon nobody scrapes pays nothing for them.
 */
export class MetricsRegistry {
  readonly registry = new Registry();
  private defaults = false;

  async text(): Promise<{ contentType: string; body: string }> {
    if (!this.defaults) {
      this.defaults = true;
      collectDefaultMetrics({ register: this.registry, prefix: 'stowage_', eventLoopMonitoringPrecision: 10 });
    }
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

/** Seconds buckets from 5 ms to 10 min: HTTP requests at the low end, image transfers and operations at the high. */
export const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
