import { StowageError } from '../errors.js';

/** Query-string helpers with dockerd's semantics (httputils.BoolValue, filters JSON). */

type Query = Record<string, unknown>;

/**
 * The first value of a query parameter, when it is a string: Go's url.Values.Get, which dockerd uses for every
 * parameter (docker-py sends `dockerfile=` twice for a Dockerfile outside the context: its name, then its text).
 */
export function strParam(q: Query, key: string): string | undefined {
  let v = q[key];
  if (Array.isArray(v)) v = v[0];
  return typeof v === 'string' ? v : undefined;
}

/** Every value of a repeated query parameter. */
export function listParam(q: Query, key: string): string[] {
  const v = q[key];
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v]).filter((x): x is string => typeof x === 'string');
}

/** httputils.BoolValue: anything but "", "0", "no", "false", "none" is true. */
export function boolParam(q: Query, key: string): boolean {
  const s = strParam(q, key);
  if (s === undefined) return false;
  const t = s.trim().toLowerCase();
  return !(t === '' || t === '0' || t === 'no' || t === 'false' || t === 'none');
}

/** httputils.BoolValueOrDefault: the default when the parameter is absent or empty. */
export function boolParamOr(q: Query, key: string, dflt: boolean): boolean {
  const s = strParam(q, key);
  if (s === undefined || s === '') return dflt;
  return boolParam(q, key);
}

/**
 * Longest value of one query parameter (filters, buildargs, labels, cachefrom, …): JSON documents from the
 * outside are bounded before anything parses them. The engine's HTTP servers accept request heads large
 * enough for such a value to reach the app (see server.ts), which answers 400 with this message.
 */
export const MAX_QUERY_PARAM_BYTES = 64 * 1024;

function paramTooLarge(key: string, bytes: number): StowageError {
  return new StowageError('BAD_REQUEST', `query parameter "${key.slice(0, 64)}" is ${bytes} bytes, larger than ${MAX_QUERY_PARAM_BYTES} bytes`, {
    details: { parameter: key.slice(0, 64), size: bytes, limit: MAX_QUERY_PARAM_BYTES },
  });
}

/** Refuses any query parameter value (or name) longer than MAX_QUERY_PARAM_BYTES. */
export function checkQueryBounds(q: Query): void {
  for (const [key, value] of Object.entries(q)) {
    if (Buffer.byteLength(key) > MAX_QUERY_PARAM_BYTES) throw paramTooLarge(key, Buffer.byteLength(key));
    for (const v of Array.isArray(value) ? value : [value]) {
      if (typeof v !== 'string') continue;
      const n = Buffer.byteLength(v);
      if (n > MAX_QUERY_PARAM_BYTES) throw paramTooLarge(key, n);
    }
  }
}

/** Docker's filters.Args: key -> set of values. */
export type Filters = Map<string, string[]>;

/** dockerd's invalidFilter error ("invalid filter", "invalid filter 'key'", "invalid filter 'key=value'"). */
function invalidFilter(key?: string): StowageError {
  return new StowageError('BAD_REQUEST', key === undefined ? 'invalid filter' : `invalid filter '${key}'`);
}

/**
 * Parses the `filters` parameter as dockerd's filters.FromJSON: `{"key":{"value":true}}` (current) or
 * `{"key":["value"]}` (legacy); anything else is "invalid filter". Unknown keys are "invalid filter '<key>'".
 */
export function parseFilters(raw: string | undefined, accepted: readonly string[]): Filters {
  const out: Filters = new Map();
  if (raw === undefined || raw === '') return out;
  if (Buffer.byteLength(raw) > MAX_QUERY_PARAM_BYTES) throw paramTooLarge('filters', Buffer.byteLength(raw));
  let doc: unknown;
  try {
    doc = JSON.parse(raw);
  } catch {
    throw invalidFilter();
  }
  if (doc === null) return out;
  if (typeof doc !== 'object' || Array.isArray(doc)) throw invalidFilter();
  const entries = Object.entries(doc as Record<string, unknown>);
  for (const [, value] of entries) {
    if (Array.isArray(value)) {
      if (!value.every((v) => typeof v === 'string')) throw invalidFilter();
    } else if (value === null || typeof value !== 'object' || !Object.values(value).every((on) => typeof on === 'boolean')) {
      throw invalidFilter();
    }
  }
  for (const [key, value] of entries) {
    const values = Array.isArray(value)
      ? (value as string[])
      : Object.entries(value as Record<string, boolean>)
          .filter(([, on]) => on)
          .map(([k]) => k);
    if (!accepted.includes(key)) throw invalidFilter(key);
    out.set(key, values);
  }
  return out;
}

/** filters.GetBoolOrDefault. */
export function filterBool(f: Filters, key: string, dflt: boolean): boolean {
  const values = f.get(key);
  if (!values || values.length === 0) return dflt;
  let result: boolean | undefined;
  for (const v of values) {
    const t = v.toLowerCase();
    let b: boolean;
    if (t === 'true' || t === '1') b = true;
    else if (t === 'false' || t === '0') b = false;
    else throw new StowageError('BAD_REQUEST', `invalid filter '${key}=${v}'`);
    result = result === undefined ? b : result && b;
  }
  return result ?? dflt;
}

/** Label filters: `key` (present) or `key=value`; every one must match. */
export function matchLabels(labels: Record<string, string>, filters: readonly string[]): boolean {
  for (const f of filters) {
    const eq = f.indexOf('=');
    if (eq === -1) {
      if (!Object.hasOwn(labels, f)) return false;
    } else {
      const k = f.slice(0, eq);
      if (!Object.hasOwn(labels, k) || labels[k] !== f.slice(eq + 1)) return false;
    }
  }
  return true;
}

/**
 * Go's path.Match compiled to a RegExp: `*` any run of non-'/' characters, `?` one non-'/' character,
 * `[...]` classes with `^` negation and ranges, `\` escapes. Undefined for a malformed pattern (where Go
 * returns ErrBadPattern): each caller decides what that means for it.
 */
export function goPatternRegExp(pattern: string): RegExp | undefined {
  let re = '^';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '\\') {
      i++;
      if (i >= pattern.length) return undefined;
      re += escapeRe(pattern[i]!);
    } else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end === -1) return undefined;
      let body = pattern.slice(i + 1, end);
      let neg = false;
      if (body.startsWith('^')) {
        neg = true;
        body = body.slice(1);
      }
      re += `[${neg ? '^/' : ''}${body.replace(/[\]\\^]/g, '\\$&')}]`;
      i = end;
    } else re += escapeRe(c);
  }
  try {
    return new RegExp(`${re}$`, 's');
  } catch {
    return undefined;
  }
}

/** Go's path.Match; false for a malformed pattern. */
export function pathMatch(pattern: string, name: string): boolean {
  return goPatternRegExp(pattern)?.test(name) ?? false;
}

function escapeRe(c: string): string {
  return c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

/**
 * Docker's `until`/`before` timestamps (timetypes.GetTimestamp): a Unix time (seconds, fractional), an
 * RFC 3339 date or date-time, or a Go duration ("10m", "1h30m") meaning that long ago. Returns ms since epoch.
 */
export function parseTimestamp(value: string, nowMs: number = Date.now()): number {
  const v = value.trim();
  if (/^\d+(\.\d+)?$/.test(v)) return Math.floor(Number(v) * 1000);
  const dur = parseGoDuration(v);
  if (dur !== undefined) return nowMs - dur;
  const t = Date.parse(v);
  if (!Number.isNaN(t)) return t;
  throw new StowageError('BAD_REQUEST', `failed to parse value as time or duration: "${value}"`);
}

export function parseGoDuration(v: string): number | undefined {
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/gy;
  if (v === '') return undefined;
  let total = 0;
  let pos = 0;
  const unit: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  re.lastIndex = 0;
  let sign = 1;
  let s = v;
  if (s.startsWith('-')) {
    sign = -1;
    s = s.slice(1);
  }
  while (pos < s.length) {
    re.lastIndex = pos;
    const m = re.exec(s);
    if (!m) return undefined;
    total += Number(m[1]) * unit[m[2]!]!;
    pos = re.lastIndex;
  }
  return sign * total;
}
