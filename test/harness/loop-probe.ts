/**
 * Measures how long this process's event loop is held by synchronous work. A timer ticks every few
 * milliseconds; a tick that comes late means the loop was busy, or the process was not scheduled at all
 * (a loaded CI box). Only the first is the code's fault, so each late tick counts the smaller of its
 * lateness and the CPU time the process used meanwhile.
 *
 *   const probe = startLoopProbe();  … work …  const { maxStallMs, maxLateMs } = probe.stop();
 */
export interface LoopProbe {
  stop(): { maxStallMs: number; maxLateMs: number; ticks: number };
}

export function startLoopProbe(everyMs = 5): LoopProbe {
  let last = performance.now();
  let lastCpu = process.cpuUsage();
  let maxStallMs = 0;
  let maxLateMs = 0;
  let ticks = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    const cpu = process.cpuUsage(lastCpu);
    const lateMs = Math.max(0, now - last - everyMs);
    const cpuMs = (cpu.user + cpu.system) / 1000;
    maxLateMs = Math.max(maxLateMs, lateMs);
    maxStallMs = Math.max(maxStallMs, Math.min(lateMs, cpuMs));
    ticks++;
    last = now;
    lastCpu = process.cpuUsage();
  }, everyMs);
  return {
    stop() {
      clearInterval(timer);
      return { maxStallMs, maxLateMs, ticks };
    },
  };
}
