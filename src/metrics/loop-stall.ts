import { readFileSync } from 'node:fs';

/**
 * The longest stretch this process's event loop was held by its own work (synchronous code that did not
 * yield). A timer ticks every `everyMs`; a late tick means the loop was busy, or the main thread was not
 * scheduled at all (a loaded machine). Only the first is the code's fault, so a late tick counts the smaller
 * of its lateness and the CPU time the main thread used meanwhile: on Linux that thread's own time from
 * /proc/self/task/<pid>/schedstat (worker threads decoding on the side do not count); elsewhere the
 * process's, which over-reports when workers are busy.
 */
export class LoopStallMonitor {
  private maxStallMs = 0;
  private ticks = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly mainThreadStat = `/proc/self/task/${process.pid}/schedstat`;
  private useSchedstat = true;

  constructor(private readonly everyMs = 10) {}

  start(): void {
    if (this.timer) return;
    let last = performance.now();
    let lastCpu = this.cpuMs();
    this.timer = setInterval(() => {
      const now = performance.now();
      const cpu = this.cpuMs();
      const lateMs = Math.max(0, now - last - this.everyMs);
      this.maxStallMs = Math.max(this.maxStallMs, Math.min(lateMs, cpu - lastCpu));
      this.ticks++;
      last = now;
      lastCpu = cpu;
    }, this.everyMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** The longest stall (ms) since the previous call, and the ticks seen in all; the maximum starts again. */
  take(): { maxStallMs: number; ticks: number } {
    const out = { maxStallMs: this.maxStallMs, ticks: this.ticks };
    this.maxStallMs = 0;
    return out;
  }

  /** CPU time of the main thread (ms), or of the whole process where the thread's is not readable. */
  private cpuMs(): number {
    if (this.useSchedstat) {
      try {
        return Number(readFileSync(this.mainThreadStat, 'utf8').split(' ')[0]) / 1e6;
      } catch {
        this.useSchedstat = false;
      }
    }
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  }
}
