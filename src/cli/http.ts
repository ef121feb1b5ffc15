import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { CliError, DryRunStop } from './errors.js';
import { type OutStream, writeLine } from './io.js';

/**
 * The control-plane REST client: JSON in and out, Bearer token, every non-2xx answer turned into a
 * CliError with the server's code. --debug logs each request and response line to stderr (token
 * redacted); --dry-run prints the request it would send and stops the command (DryRunStop).
 * It speaks through node:http(s), which Node has loaded already, so a short command starts fast.
 */

export type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

export interface CheckIssue {
  path: ReadonlyArray<string | number>;
  message: string;
}

/**
 * What checks an answer: a zod schema, or a hand-written check of the same shape where loading zod
 * would cost a short command more than its request (status-check.ts). `_output` only carries the type.
 */
export interface ResponseCheck<T> {
  readonly _output: T;
  safeParse(value: unknown): { success: true } | { success: false; error: { issues: readonly CheckIssue[] } };
}

/** An answer: status, headers and the body as a stream (read it or destroy it). */
export interface Response {
  statusCode: number;
  headers: IncomingHttpHeaders;
  body: IncomingMessage;
}

const CONNECT_TIMEOUT_MS = 10_000;
/** Silence allowed while waiting for the headers or between chunks of a JSON answer. */
const IDLE_TIMEOUT_MS = 60_000;
export type Query = Record<string, string | number | undefined>;

export interface ApiClientOptions {
  host: string;
  token: string | undefined;
  /** A CA certificate (PEM) trusted for https:// beside the system roots. */
  ca?: string;
  debug: boolean;
  dryRun: boolean;
  json: boolean;
  stdout: OutStream;
  stderr: OutStream;
}

export interface PlannedRequest {
  method: Method;
  url: string;
  body?: unknown;
}

/** Answers bigger than this are refused (lists of operations and machines stay far below). */
export const MAX_RESPONSE_BYTES = 64 * 1024 * 1024;
const MAX_ERROR_BYTES = 64 * 1024;

export class ApiClient {
  readonly host: string;

  constructor(private readonly opts: ApiClientOptions) {
    this.host = opts.host;
  }

  url(path: string, query?: Query): string {
    const u = new URL(this.host + path);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined && v !== '') u.searchParams.set(k, String(v));
    return u.href;
  }

  /** Sends a JSON request and parses the answer with `schema`. */
  async call<T>(method: Method, path: string, schema: ResponseCheck<T>, opts: { query?: Query; body?: unknown } = {}): Promise<T> {
    const url = this.url(path, opts.query);
    this.planned({ method, url, ...(opts.body !== undefined ? { body: opts.body } : {}) });
    const res = await this.send(method, url, opts.body, { accept: 'application/json' });
    let text: string;
    try {
      text = await readText(res.body, MAX_RESPONSE_BYTES, url);
    } catch (err) {
      throw err instanceof CliError ? err : connectionError(this.host, err);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new CliError('BAD_RESPONSE', `${method} ${url}: the control plane answered ${res.statusCode} with something that is not JSON`, {
        details: { status: res.statusCode, body: text.slice(0, 200) },
      });
    }
    const r = schema.safeParse(parsed);
    if (!r.success) {
      const issue = r.error.issues[0];
      throw new CliError('BAD_RESPONSE', `${method} ${url}: unexpected answer${issue ? ` at ${issue.path.join('.') || 'top level'}: ${issue.message}` : ''}`, {
        details: { status: res.statusCode },
      });
    }
    // The raw object, not r.data: zod drops fields it does not know, and --json prints the whole answer.
    // (The response schemas have no defaults or transforms, so a valid raw object is the parsed one.)
    return parsed as T;
  }

  /**
   * Opens a streaming GET (server-sent events); the caller reads and destroys the body. Never times out
   * between chunks: an operation may be quiet for long.
   */
  async stream(path: string, accept: string): Promise<IncomingMessage> {
    const url = this.url(path);
    this.planned({ method: 'GET', url });
    const res = await this.send('GET', url, undefined, { accept, idleTimeoutMs: 0 });
    return res.body;
  }

  /** With --dry-run: prints the request and stops the command. */
  private planned(req: PlannedRequest): void {
    if (!this.opts.dryRun) return;
    const { stdout } = this.opts;
    if (this.opts.json) {
      writeLine(stdout, JSON.stringify({ dry_run: true, request: req }, null, 2));
    } else {
      writeLine(stdout, `${req.method} ${req.url}`);
      if (req.body !== undefined) writeLine(stdout, JSON.stringify(req.body, null, 2));
    }
    throw new DryRunStop();
  }

  /** A --debug line from a caller (e.g. each event of a stream). */
  trace(line: string): void {
    this.debug(line);
  }

  private debug(line: string): void {
    if (this.opts.debug) writeLine(this.opts.stderr, `[debug] ${line}`);
  }

  private async send(method: Method, url: string, body: unknown, extra: { accept: string; idleTimeoutMs?: number }): Promise<Response> {
    const headers: Record<string, string> = { accept: extra.accept, 'user-agent': 'stowctl' };
    if (this.opts.token) headers['authorization'] = `Bearer ${this.opts.token}`;
    const payload = body === undefined ? undefined : JSON.stringify(body);
    if (payload !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(Buffer.byteLength(payload));
    }
    this.debug(`> ${method} ${url}${this.opts.token ? ' (authorization: Bearer ***)' : ' (no token)'}${payload !== undefined ? ` ${payload}` : ''}`);
    const started = Date.now();
    let res: Response;
    try {
      res = await httpRequest(method, url, headers, payload, extra.idleTimeoutMs ?? IDLE_TIMEOUT_MS, this.opts.ca);
    } catch (err) {
      this.debug(`< ${method} ${url} failed: ${(err as Error).message}`);
      throw connectionError(this.host, err);
    }
    this.debug(`< ${res.statusCode} ${method} ${url} (${Date.now() - started} ms, ${String(res.headers['content-type'] ?? 'no content-type')})`);
    if (res.statusCode >= 200 && res.statusCode < 300) return res;
    throw await errorFrom(res, method, url);
  }
}

/**
 * One request over node:http or node:https: fails when connecting takes longer than CONNECT_TIMEOUT_MS
 * or the server is silent for `idleMs` (0: never) before or while answering.
 */
async function httpRequest(method: Method, url: string, headers: Record<string, string>, payload: string | undefined, idleMs: number, ca: string | undefined): Promise<Response> {
  const u = new URL(url);
  const https = u.protocol === 'https:';
  const mod = https ? await import('node:https') : await import('node:http');
  // A private CA is trusted beside the system roots, not instead of them.
  const trust = https && ca ? { ca: [...(await import('node:tls')).rootCertificates, ca] } : {};
  return new Promise<Response>((resolve, reject) => {
    const req = mod.request(u, { method, headers, agent: false, ...trust });
    const connectTimer = setTimeout(() => req.destroy(Object.assign(new Error('connect timeout'), { code: 'UND_ERR_CONNECT_TIMEOUT' })), CONNECT_TIMEOUT_MS);
    req.once('socket', (socket) => {
      if (!socket.connecting) clearTimeout(connectTimer);
      else socket.once('connect', () => clearTimeout(connectTimer));
      if (idleMs > 0) {
        socket.setTimeout(idleMs, () => req.destroy(Object.assign(new Error(`no answer for ${idleMs / 1000} s`), { code: 'ETIMEDOUT' })));
      }
    });
    req.once('error', (err) => {
      clearTimeout(connectTimer);
      reject(err);
    });
    req.once('response', (body) => {
      clearTimeout(connectTimer);
      resolve({ statusCode: body.statusCode ?? 0, headers: body.headers, body });
    });
    req.end(payload);
  });
}

/** Unreachable control plane: say where we tried and why. */
export function connectionError(host: string, err: unknown): CliError {
  const e = err as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
  const why = e.cause?.code ?? e.code ?? e.message;
  return new CliError('CONNECTION_FAILED', `cannot reach the control plane at ${host}: ${why}`, { details: { host }, cause: err });
}

async function errorFrom(res: Response, method: Method, url: string): Promise<CliError> {
  let text = '';
  try {
    text = await readText(res.body, MAX_ERROR_BYTES, url);
  } catch {
    /* the status alone has to do */
  }
  // A wrong or missing token is the operator's configuration: exit 2 like any configuration error.
  const exitCode = res.statusCode === 401 ? 2 : 1;
  try {
    const body: unknown = JSON.parse(text);
    // The schemas load only when there is an error body to read.
    const { errorBodySchema } = await import('../control/wire.js');
    const r = errorBodySchema.safeParse(body);
    if (r.success) {
      const { code, message, details, stage } = r.data.error;
      const all = { ...(details ?? {}), ...(stage ? { stage } : {}) };
      return new CliError(code, message, { exitCode, status: res.statusCode, ...(Object.keys(all).length ? { details: all } : {}) });
    }
  } catch {
    /* not JSON: fall through */
  }
  const snippet = text.trim().slice(0, 200);
  return new CliError(res.statusCode === 401 ? 'UNAUTHORIZED' : 'HTTP_ERROR', `${method} ${url}: HTTP ${res.statusCode}${snippet ? `: ${snippet}` : ''}`, {
    exitCode,
    status: res.statusCode,
  });
}

async function readText(body: IncomingMessage, limit: number, url: string): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > limit) {
      body.destroy();
      throw new CliError('TOO_LARGE', `the answer of ${url} is larger than ${limit} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}
