import { StowageError } from '../../errors.js';

/** Pure helpers for instruction arguments: ports, signals, durations, chown specs. */

export function buildError(message: string): StowageError {
  return new StowageError('BAD_REQUEST', message);
}

/** EXPOSE: "80", "80/tcp", "8000-8002/udp" -> ["80/tcp", …] (Docker's nat.ParsePortSpecs). */
export function parsePorts(specs: string[]): string[] {
  const out: string[] = [];
  for (const raw of specs) {
    // An optional ip:hostPort: prefix is accepted and dropped, like Docker.
    const spec = raw.includes(':') ? raw.slice(raw.lastIndexOf(':') + 1) : raw;
    const m = /^(\d+)(?:-(\d+))?(?:\/([a-zA-Z]+))?$/.exec(spec);
    if (!m) throw buildError(`Invalid containerPort: ${raw}`);
    const proto = (m[3] ?? 'tcp').toLowerCase();
    if (!['tcp', 'udp', 'sctp'].includes(proto)) throw buildError(`Invalid proto: ${proto}`);
    const start = Number(m[1]);
    const end = m[2] === undefined ? start : Number(m[2]);
    if (start > 65535 || end > 65535 || end < start) throw buildError(`Invalid containerPort: ${raw}`);
    if (end - start > 65535) throw buildError(`Invalid range specified for the Port: ${raw}`);
    for (let p = start; p <= end; p++) out.push(`${p}/${proto}`);
  }
  return out;
}

const SIGNALS = new Set([
  'ABRT', 'ALRM', 'BUS', 'CHLD', 'CLD', 'CONT', 'FPE', 'HUP', 'ILL', 'INT', 'IO', 'IOT', 'KILL', 'PIPE', 'POLL',
  'PROF', 'PWR', 'QUIT', 'SEGV', 'STKFLT', 'STOP', 'SYS', 'TERM', 'TRAP', 'TSTP', 'TTIN', 'TTOU', 'URG', 'USR1',
  'USR2', 'VTALRM', 'WINCH', 'XCPU', 'XFSZ',
]);

/** STOPSIGNAL: a number, a name with or without SIG, or RTMIN+n. */
export function checkSignal(sig: string): void {
  if (/^\d+$/.test(sig) && Number(sig) > 0 && Number(sig) <= 64) return;
  const name = sig.toUpperCase().replace(/^SIG/, '');
  if (SIGNALS.has(name) || /^RTM(IN|AX)([+-]\d+)?$/.test(name)) return;
  throw buildError(`Invalid signal: ${sig}`);
}

const UNIT_NS: Record<string, number> = { ns: 1, us: 1e3, µs: 1e3, μs: 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };

/** Go's time.ParseDuration, to nanoseconds. */
export function parseDuration(s: string): number {
  if (s === '0') return 0;
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/gy;
  let total = 0;
  let pos = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * UNIT_NS[m[2]!]!;
    pos = re.lastIndex;
  }
  if (pos !== s.length || pos === 0) throw buildError(`time: invalid duration "${s}"`);
  return Math.round(total);
}

/** Go's Duration.String for the history text. */
export function formatDuration(ns: number): string {
  if (ns === 0) return '0s';
  let out = '';
  let rest = ns;
  const h = Math.floor(rest / 3600e9);
  rest -= h * 3600e9;
  const m = Math.floor(rest / 60e9);
  rest -= m * 60e9;
  if (h > 0) out += `${h}h`;
  if (h > 0 || m > 0) out += `${m}m`;
  const secs = rest / 1e9;
  out += `${Number(secs.toFixed(9))}s`;
  return out;
}

/** Go's %q for a []string: ["a" "b"]. */
export function goQuoteList(list: readonly string[]): string {
  return `[${list.map((s) => JSON.stringify(s)).join(' ')}]`;
}

export interface Identity {
  uid: number;
  gid: number;
}

function lookupDb(content: Buffer | undefined, name: string, field: number): number | undefined {
  if (!content) return undefined;
  for (const line of content.toString('utf8').split('\n')) {
    const parts = line.split(':');
    if (parts[0] === name && parts.length > field) {
      const n = Number(parts[field]);
      if (Number.isInteger(n)) return n;
    }
  }
  return undefined;
}

/** --chown=user[:group] with names looked up in the image's /etc/passwd and /etc/group. */
export function parseChown(spec: string, passwd: Buffer | undefined, group: Buffer | undefined): Identity {
  const [user = '', grp] = spec.split(':', 2);
  const fail = (what: string): never => {
    throw buildError(`unable to convert uid/gid chown string to host mapping: ${what}`);
  };
  let uid: number;
  let primaryGid: number | undefined;
  if (/^\d+$/.test(user)) {
    uid = Number(user);
  } else {
    const u = lookupDb(passwd, user, 2);
    if (u === undefined) return fail(`can't find uid for user ${user}: no such user: ${user}`);
    uid = u;
    primaryGid = lookupDb(passwd, user, 3);
  }
  let gid: number;
  if (grp === undefined || grp === '') {
    gid = primaryGid ?? uid;
  } else if (/^\d+$/.test(grp)) {
    gid = Number(grp);
  } else {
    const g = lookupDb(group, grp, 2);
    if (g === undefined) return fail(`can't find gid for group ${grp}: no such group: ${grp}`);
    gid = g;
  }
  return { uid, gid };
}
