/**
 * Human formatting: aligned tables, byte sizes, rates, durations, ages and short digests. Pure
 * functions, so the tests pin the exact text.
 */

/**
 * Columns separated by three spaces, each as wide as its widest cell; the last column is not padded
 * (no trailing blanks). Cells with newlines or tabs are flattened so a row stays one line.
 */
export function formatTable(headers: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const clean = (s: string): string => s.replace(/[\r\n\t]+/g, ' ');
  const all = [headers.map(clean), ...rows.map((r) => headers.map((_, i) => clean(r[i] ?? '')))];
  const widths = headers.map((_, i) => Math.max(...all.map((r) => [...(r[i] ?? '')].length)));
  return all
    .map((r) =>
      r
        .map((cell, i) => (i === r.length - 1 ? cell : cell + ' '.repeat((widths[i] ?? 0) - [...cell].length)))
        .join('   ')
        .trimEnd(),
    )
    .join('\n');
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 0 B, 999 B, 1.0 KiB, 12.3 MiB, 120 MiB: three significant digits at most. */
export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n) || n < 0) return '-';
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  if (u === 0) return `${n} B`;
  const shown = v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  return `${shown} ${UNITS[u]}`;
}

/** Bytes per second as "12.3 MiB/s". */
export function formatRate(bytesPerSecond: number | undefined): string {
  if (bytesPerSecond === undefined || !Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0) return '-';
  return `${formatBytes(Math.round(bytesPerSecond))}/s`;
}

/** 850ms, 4.2s, 3m05s, 2h01m. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '-';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** How long ago an ISO time was: "just now", "42s ago", "5m ago", "3h ago", "2d ago"; the raw text when unparsable. */
export function formatAge(iso: string | null | undefined, now: number = Date.now()): string {
  if (!iso) return '-';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const s = Math.round((now - t) / 1000);
  if (s < 0) return 'in the future';
  if (s < 2) return 'just now';
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

/** "sha256:0123…" → "0123456789ab" (12 hex, as docker prints image IDs). */
export function shortDigest(digest: string | null | undefined): string {
  if (!digest) return '-';
  const hex = digest.startsWith('sha256:') ? digest.slice('sha256:'.length) : digest;
  return hex.slice(0, 12);
}

/** Comma-joined, "-" when empty, long lists cut with a count of the rest. */
export function formatList(items: readonly string[], max = 3): string {
  if (items.length === 0) return '-';
  if (items.length <= max) return items.join(',');
  return `${items.slice(0, max).join(',')},+${items.length - max}`;
}

/** Pretty JSON for --json: two-space indent, one trailing newline added by the writer. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, null, 2);
}
