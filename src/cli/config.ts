import { readFile } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { z } from 'zod';
import { CliError } from './errors.js';

/**
 * Where stowctl finds the control plane and its API token. Each setting comes from, in order:
 * the flag (--host, --token), the environment (STOWAGE_HOST, STOWAGE_TOKEN), the config file
 * (--config, else $XDG_CONFIG_HOME/stowage/stowctl.json or ~/.config/stowage/stowctl.json), the default.
 */

export const DEFAULT_HOST = 'http://127.0.0.1:5070';

export type Source = 'flag' | 'env' | 'file' | 'default';

export interface CliConfig {
  /** Base URL without a trailing slash. */
  host: string;
  token: string | undefined;
  hostSource: Source;
  tokenSource: Source | undefined;
  /** The config file read, when one was. */
  file: string | undefined;
  /** A CA certificate file (PEM) to trust for an https:// control plane, e.g. the cluster CA. */
  cacert: string | undefined;
  /** A client certificate and its key (PEM files, `stowd client-cert`), presented to agents of a TLS cluster. */
  cert: string | undefined;
  key: string | undefined;
}

export interface ConfigInput {
  host?: string | undefined;
  token?: string | undefined;
  config?: string | undefined;
  cacert?: string | undefined;
  cert?: string | undefined;
  key?: string | undefined;
}

/** The file's shape; zod is loaded only when there is a file to check. */
async function fileSchema() {
  const { z } = await import('zod');
  return z.object({ host: z.string().min(1).optional(), token: z.string().min(1).optional(), cacert: z.string().min(1).optional(), cert: z.string().min(1).optional(), key: z.string().min(1).optional() }).passthrough();
}
type ConfigFile = z.infer<Awaited<ReturnType<typeof fileSchema>>>;

/** The default config file path for this environment. */
export function defaultConfigPath(env: NodeJS.ProcessEnv): string {
  const xdg = env['XDG_CONFIG_HOME'];
  const base = xdg && xdg.startsWith('/') ? xdg : join(env['HOME'] || homedir(), '.config');
  return join(base, 'stowage', 'stowctl.json');
}

function configError(message: string, details?: Record<string, unknown>): CliError {
  return new CliError('CONFIG_ERROR', message, { exitCode: 2, ...(details ? { details } : {}) });
}

/** Reads the config file: a missing default file is no error, a missing named one is. */
async function readConfigFile(path: string, explicit: boolean): Promise<ConfigFile | undefined> {
  let text: string;
  try {
    // node:fs, which Node has loaded already: node:fs/promises would load a dozen more modules first.
    text = await new Promise<string>((resolve, reject) => readFile(path, 'utf8', (err, data) => (err ? reject(err) : resolve(data))));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !explicit) return undefined;
    throw configError(`cannot read config file ${path}: ${(err as Error).message}`, { path });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw configError(`config file ${path} is not JSON: ${(err as Error).message}`, { path });
  }
  const r = (await fileSchema()).safeParse(parsed);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw configError(`config file ${path}: ${issue ? `${issue.path.join('.') || 'top level'}: ${issue.message}` : 'invalid'}; expected {"host": "http://…", "token": "…"}`, { path });
  }
  return r.data;
}

/** Checks and normalises a control-plane base URL. */
export function normalizeHost(raw: string, source: Source): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw configError(`invalid host "${raw}" (from ${source}): expected a URL such as ${DEFAULT_HOST}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw configError(`invalid host "${raw}" (from ${source}): only http:// and https:// are supported`);
  }
  if (url.search || url.hash) throw configError(`invalid host "${raw}" (from ${source}): no query or fragment, please`);
  return url.href.replace(/\/+$/, '');
}

export async function resolveConfig(input: ConfigInput, env: NodeJS.ProcessEnv): Promise<CliConfig> {
  const explicit = input.config !== undefined;
  const path = input.config ?? defaultConfigPath(env);
  const file = await readConfigFile(path, explicit);

  const pick = (flag: string | undefined, envName: string, fromFile: string | undefined): { value: string; source: Source } | undefined => {
    if (flag !== undefined && flag !== '') return { value: flag, source: 'flag' };
    const e = env[envName];
    if (e !== undefined && e !== '') return { value: e, source: 'env' };
    if (fromFile !== undefined) return { value: fromFile, source: 'file' };
    return undefined;
  };
  const host = pick(input.host, 'STOWAGE_HOST', file?.host) ?? { value: DEFAULT_HOST, source: 'default' as const };
  const token = pick(input.token, 'STOWAGE_TOKEN', file?.token);
  const cacert = pick(input.cacert, 'STOWAGE_CACERT', file?.cacert);
  const cert = pick(input.cert, 'STOWAGE_CERT', file?.cert);
  const key = pick(input.key, 'STOWAGE_KEY', file?.key);
  if ((cert === undefined) !== (key === undefined)) throw configError('a client certificate needs its key: give both --cert and --key (STOWAGE_CERT, STOWAGE_KEY)');
  return {
    cacert: cacert?.value,
    cert: cert?.value,
    key: key?.value,
    host: normalizeHost(host.value, host.source),
    hostSource: host.source,
    token: token?.value,
    tokenSource: token?.source,
    file: file ? path : undefined,
  };
}
