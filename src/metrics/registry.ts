import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import { LoopStallMonitor } from './loop-stall.js';

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
      this.registerLoopStall();
    }
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  /**
   * Event-loop stalls caused by this process's own work (see LoopStallMonitor), unlike the lag series, which
   * also count the time a loaded machine did not schedule the process. The maximum is per scrape interval.
   */
  private registerLoopStall(): void {
    const monitor = new LoopStallMonitor();
    monitor.start();
    let taken = { maxStallMs: 0, ticks: 0 };
    new Gauge({
      name: 'stowage_event_loop_stall_max_seconds',
      help: 'Longest time the event loop was held by this process (its main thread on CPU) since the previous scrape',
      registers: [this.registry],
      collect() {
        taken = monitor.take();
        this.set(taken.maxStallMs / 1000);
      },
    });
    new Counter({
      name: 'stowage_event_loop_stall_probe_ticks_total',
      help: 'Ticks of the event-loop stall probe (it measures only while it ticks)',
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(taken.ticks);
      },
    });
  }
}

/** Seconds buckets from 5 ms to 10 min: HTTP requests at the low end, image transfers and operations at the high. */
export const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
