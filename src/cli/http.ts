import { Agent, type Dispatcher, request } from 'undici';
import type { z } from 'zod';
import { errorBodySchema } from '../control/wire.js';
import { CliError, DryRunStop } from './errors.js';
import { type OutStream, writeLine } from './io.js';

/**
 * The control-plane REST client: JSON in and out, Bearer token, every non-2xx answer turned into a
 * CliError with the server's code. --debug logs each request and response line to stderr (token
 * redacted); --dry-run prints the request it would send and stops the command (DryRunStop).
 */

export type Method = 'GET' | 'POST';
export type Query = Record<string, string | number | undefined>;

export interface ApiClientOptions {
  host: string;
  token: string | undefined;
  debug: boolean;
  dryRun: boolean;
  json: boolean;
  stdout: OutStream;
  stderr: OutStream;
  dispatcher?: Dispatcher;
}

export interface PlannedRequest {
  method: Method;
  url: string;
  body?: unknown;
}

/** Answers bigger than this are refused (lists of operations and machines stay far below). */
export const MAX_RESPONSE_BYTES = 64 * 1024 * 1024;
const MAX_ERROR_BYTES = 64 * 1024;

let sharedDispatcher: Dispatcher | undefined;
function defaultDispatcher(): Dispatcher {
  sharedDispatcher ??= new Agent({ connect: { timeout: 10_000 }, headersTimeout: 60_000, bodyTimeout: 60_000 });
  return sharedDispatcher;
}

export class ApiClient {
  readonly host: string;
  private readonly dispatcher: Dispatcher;

  constructor(private readonly opts: ApiClientOptions) {
    this.host = opts.host;
    this.dispatcher = opts.dispatcher ?? defaultDispatcher();
  }

  url(path: string, query?: Query): string {
    const u = new URL(this.host + path);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined && v !== '') u.searchParams.set(k, String(v));
    return u.href;
  }

  /** Sends a JSON request and parses the answer with `schema`. */
  async call<S extends z.ZodTypeAny>(method: Method, path: string, schema: S, opts: { query?: Query; body?: unknown } = {}): Promise<z.infer<S>> {
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
    return parsed as z.infer<S>;
  }

  /**
   * Opens a streaming GET (server-sent events); the caller reads and destroys the body. Never times out
   * between chunks: an operation may be quiet for long.
   */
  async stream(path: string, accept: string, signal?: AbortSignal): Promise<Dispatcher.ResponseData['body']> {
    const url = this.url(path);
    this.planned({ method: 'GET', url });
    const res = await this.send('GET', url, undefined, { accept, bodyTimeout: 0, signal });
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

  private async send(
    method: Method,
    url: string,
    body: unknown,
    extra: { accept: string; bodyTimeout?: number; signal?: AbortSignal | undefined },
  ): Promise<Dispatcher.ResponseData> {
    const headers: Record<string, string> = { accept: extra.accept, 'user-agent': 'stowctl' };
    if (this.opts.token) headers['authorization'] = `Bearer ${this.opts.token}`;
    const payload = body === undefined ? undefined : JSON.stringify(body);
    if (payload !== undefined) headers['content-type'] = 'application/json';
    this.debug(`> ${method} ${url}${this.opts.token ? ' (authorization: Bearer ***)' : ' (no token)'}${payload !== undefined ? ` ${payload}` : ''}`);
    const started = Date.now();
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, {
        method,
        headers,
        body: payload ?? null,
        dispatcher: this.dispatcher,
        ...(extra.bodyTimeout !== undefined ? { bodyTimeout: extra.bodyTimeout } : {}),
        ...(extra.signal ? { signal: extra.signal } : {}),
      });
    } catch (err) {
      this.debug(`< ${method} ${url} failed: ${(err as Error).message}`);
      throw connectionError(this.host, err);
    }
    this.debug(`< ${res.statusCode} ${method} ${url} (${Date.now() - started} ms, ${String(res.headers['content-type'] ?? 'no content-type')})`);
    if (res.statusCode >= 200 && res.statusCode < 300) return res;
    throw await errorFrom(res, method, url);
  }
}

/** Unreachable control plane: say where we tried and why. */
export function connectionError(host: string, err: unknown): CliError {
  const e = err as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
  const why = e.cause?.code ?? e.code ?? e.message;
  return new CliError('CONNECTION_FAILED', `cannot reach the control plane at ${host}: ${why}`, { details: { host }, cause: err });
}

async function errorFrom(res: Dispatcher.ResponseData, method: Method, url: string): Promise<CliError> {
  let text = '';
  try {
    text = await readText(res.body, MAX_ERROR_BYTES, url);
  } catch {
    /* the status alone has to do */
  }
  // A wrong or missing token is the operator's configuration: exit 2 like any configuration error.
  const exitCode = res.statusCode === 401 ? 2 : 1;
  try {
    const r = errorBodySchema.safeParse(JSON.parse(text));
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

async function readText(body: Dispatcher.ResponseData['body'], limit: number, url: string): Promise<string> {
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
