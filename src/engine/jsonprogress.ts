/**
 * Docker's JSON progress messages (moby/pkg/jsonmessage): the `progress` bar string dockerd puts next
 * to `progressDetail`, rendered exactly as the daemon does (it has no terminal: width 200).
 */

/** go-units HumanSize: decimal units, 4 significant digits ("1.234MB", "528B"). */
export function humanSize(size: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB', 'EB', 'ZB', 'YB'];
  let i = 0;
  let s = size;
  while (s >= 1000 && i < units.length - 1) {
    s /= 1000;
    i++;
  }
  return `${goG4(s)}${units[i]}`;
}

/** fmt "%.4g" without exponent cases that cannot occur here. */
function goG4(v: number): string {
  if (v === 0) return '0';
  const p = Number(v.toPrecision(4));
  return String(p);
}

function goDuration(seconds: number): string {
  if (seconds <= 0) return '0s';
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = Math.floor(seconds % 60);
  if (h > 0) return `${h}h${m}m${s}s`;
  if (m > 0) return `${m}m${s}s`;
  return `${s}s`;
}

/** JSONProgress.String() with width 200. `start` is a Unix time in seconds. */
export function progressBar(current: number, total: number, start?: number, now: number = Date.now() / 1000): string {
  if (current <= 0 && total <= 0) return '';
  if (total <= 0) return humanSize(current).padStart(8);
  let pct = Math.floor(Math.floor((current / total) * 100) / 2);
  if (pct > 50) pct = 50;
  const bar = `[${'='.repeat(pct)}>${' '.repeat(Math.max(0, 50 - pct))}] `;
  let numbers = `${humanSize(current).padStart(8)}/${humanSize(total)}`;
  if (current > total) numbers = humanSize(current).padStart(8);
  let left = '';
  if (current > 0 && start !== undefined && start > 0 && pct < 50) {
    const elapsed = Math.max(0, now - start);
    const perByte = elapsed / current;
    left = ` ${goDuration(Math.floor((total - current) * perByte))}`;
  }
  return bar + numbers + left;
}

/** A Docker progress message for one layer. */
export function progressMessage(status: string, id: string, current: number, total: number, start?: number): Record<string, unknown> {
  const detail: Record<string, number> = { current };
  if (total > 0) detail['total'] = total;
  return { status, progressDetail: detail, progress: progressBar(current, total, start), id };
}

/** A Docker status message for one layer, without progress ("Pulling fs layer", "Pushed", …). */
export function statusMessage(status: string, id: string): Record<string, unknown> {
  return { status, progressDetail: {}, id };
}
