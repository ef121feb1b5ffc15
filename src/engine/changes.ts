import { StowageError } from '../errors.js';

/**
 * Docker's `--change` for import and commit: Dockerfile instructions applied to an image config
 * (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR).
 */

export type ImageContainerConfig = Record<string, unknown> & {
  Env?: string[] | null;
  Cmd?: string[] | null;
  Entrypoint?: string[] | null;
  ExposedPorts?: Record<string, object> | null;
  Labels?: Record<string, string> | null;
  Volumes?: Record<string, object> | null;
  OnBuild?: string[] | null;
  User?: string;
  WorkingDir?: string;
  StopSignal?: string;
};

const VALID = new Set(['cmd', 'entrypoint', 'env', 'expose', 'label', 'onbuild', 'stopsignal', 'user', 'volume', 'workdir']);

function bad(msg: string): StowageError {
  return new StowageError('BAD_REQUEST', msg);
}

/** A JSON string array (exec form), or undefined when the text is not one. */
function jsonArray(text: string): string[] | undefined {
  const t = text.trim();
  if (!t.startsWith('[')) return undefined;
  try {
    const v = JSON.parse(t) as unknown;
    if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
  } catch {
    /* shell form */
  }
  return undefined;
}

/** Splits words honouring single/double quotes and backslash escapes (Dockerfile key=value parsing). */
export function splitWords(text: string): string[] {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  let quote: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote) {
      if (c === quote) quote = undefined;
      else if (c === '\\' && quote === '"' && i + 1 < text.length) cur += text[++i];
      else cur += c;
      continue;
    }
    if (c === '"' || c === "'") {
      quote = c;
      inWord = true;
    } else if (c === '\\' && i + 1 < text.length) {
      cur += text[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (quote) throw bad(`unexpected end of statement while looking for matching ${quote}`);
  if (inWord) words.push(cur);
  return words;
}

/** ENV/LABEL arguments: `k=v k2="v 2"` or the legacy `k v with spaces`. */
function keyValues(cmd: string, rest: string): Array<[string, string]> {
  const words = splitWords(rest);
  if (words.length === 0) throw bad(`${cmd.toUpperCase()} requires at least one argument`);
  if (!words[0]!.includes('=')) {
    const m = /^\s*(\S+)\s+([\s\S]*)$/.exec(rest);
    if (!m || m[2]!.trim() === '') throw bad(`${cmd.toUpperCase()} names can not be blank`);
    return [[m[1]!, m[2]!.trim()]];
  }
  return words.map((w) => {
    const eq = w.indexOf('=');
    if (eq <= 0) throw bad(`Syntax error - can't find = in "${w}". Must be of the form: name=value`);
    return [w.slice(0, eq), w.slice(eq + 1)];
  });
}

/** Sets `key=value` in an environment list: an existing key keeps its position (as Docker does), a new one goes last. */
export function setEnv(env: readonly string[], key: string, value: string): string[] {
  const entry = `${key}=${value}`;
  const i = env.findIndex((e) => e.split('=', 1)[0] === key);
  if (i === -1) return [...env, entry];
  const copy = [...env];
  copy[i] = entry;
  return copy;
}

/** Applies the change lines to a copy of `config`. Throws BAD_REQUEST with Docker's wording. */
export function applyChanges(config: ImageContainerConfig, changes: readonly string[]): ImageContainerConfig {
  const c: ImageContainerConfig = { ...config };
  for (const rawLine of changes) {
    const line = rawLine.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^(\S+)\s*([\s\S]*)$/.exec(line);
    const cmd = (m?.[1] ?? '').toLowerCase();
    const rest = m?.[2] ?? '';
    if (!VALID.has(cmd)) throw bad(`${cmd} is not a valid change command`);
    switch (cmd) {
      case 'cmd':
      case 'entrypoint': {
        const arr = jsonArray(rest) ?? (rest.trim() === '' ? [] : ['/bin/sh', '-c', rest]);
        if (cmd === 'cmd') c.Cmd = arr;
        else c.Entrypoint = arr;
        break;
      }
      case 'env': {
        let env = [...(c.Env ?? [])];
        for (const [k, v] of keyValues(cmd, rest)) env = setEnv(env, k, v);
        c.Env = env;
        break;
      }
      case 'label': {
        const labels = { ...(c.Labels ?? {}) };
        for (const [k, v] of keyValues(cmd, rest)) labels[k] = v;
        c.Labels = labels;
        break;
      }
      case 'expose': {
        const ports = { ...(c.ExposedPorts ?? {}) };
        const words = splitWords(rest);
        if (words.length === 0) throw bad('EXPOSE requires at least one argument');
        for (const w of words) {
          const pm = /^(\d+)(?:-(\d+))?(?:\/(tcp|udp|sctp))?$/i.exec(w);
          if (!pm) throw bad(`invalid containerPort: ${w.split('/')[0]}`);
          const proto = (pm[3] ?? 'tcp').toLowerCase();
          const from = Number(pm[1]);
          const to = pm[2] ? Number(pm[2]) : from;
          if (to < from || to > 65535) throw bad(`invalid range specified for container port: ${w}`);
          for (let p = from; p <= to; p++) ports[`${p}/${proto}`] = {};
        }
        c.ExposedPorts = ports;
        break;
      }
      case 'volume': {
        const vols = { ...(c.Volumes ?? {}) };
        const list = jsonArray(rest) ?? splitWords(rest);
        if (list.length === 0) throw bad('VOLUME requires at least one argument');
        for (const v of list) {
          if (v.trim() === '') throw bad('VOLUME specified can not be an empty string');
          vols[v] = {};
        }
        c.Volumes = vols;
        break;
      }
      case 'user':
        if (rest.trim() === '') throw bad('USER requires exactly one argument');
        c.User = rest.trim();
        break;
      case 'workdir': {
        const dir = rest.trim();
        if (dir === '') throw bad('WORKDIR requires exactly one argument');
        c.WorkingDir = dir.startsWith('/') ? dir : `${(c.WorkingDir || '/').replace(/\/$/, '')}/${dir}`;
        break;
      }
      case 'stopsignal':
        if (rest.trim() === '') throw bad('STOPSIGNAL requires exactly one argument');
        c.StopSignal = rest.trim();
        break;
      case 'onbuild':
        if (rest.trim() === '') throw bad('ONBUILD requires at least one argument');
        c.OnBuild = [...(c.OnBuild ?? []), rest.trim()];
        break;
    }
  }
  return c;
}
