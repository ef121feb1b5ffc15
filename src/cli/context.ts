import { type CliConfig, resolveConfig } from './config.js';
import { CliError } from './errors.js';
import { ApiClient } from './http.js';
import { type CliIo, writeLine } from './io.js';
import { type ListView, type ViewOptions, isMachineOutput, renderList, renderObject, viewOptions } from './view.js';

/** The global flags, as commander parsed them. */
export interface GlobalOptions {
  host?: string | undefined;
  token?: string | undefined;
  config?: string | undefined;
  cacert?: string | undefined;
  cert?: string | undefined;
  key?: string | undefined;
  json?: boolean | undefined;
  output?: string | undefined;
  format?: string | undefined;
  trunc?: boolean | undefined;
  debug?: boolean | undefined;
  dryRun?: boolean | undefined;
}

export type ProgressMode = 'bars' | 'lines' | 'none';

/**
 * What every command gets: the streams, the global flags, the API client and the output helpers.
 * The configuration reader and the HTTP client are small and almost every command needs them: they load
 * with this module (one file read less each, at a time when every file read is waited for in turn);
 * what they need that is heavy (node:http, zod for a config file) they import when used.
 */
export class CommandContext {
  /** Output for programs (-o json|yaml, --format): no progress, errors as objects. */
  readonly json: boolean;
  readonly view: ViewOptions;
  readonly debug: boolean;
  readonly dryRun: boolean;
  private client: ApiClient | undefined;
  private config: CliConfig | undefined;

  constructor(
    readonly io: CliIo,
    private readonly globals: GlobalOptions,
  ) {
    this.view = viewOptions(globals);
    this.json = isMachineOutput(this.view);
    this.debug = globals.debug === true;
    this.dryRun = globals.dryRun === true;
  }

  /** Live bars on a terminal, plain lines otherwise, nothing when the output is for programs. */
  get progress(): ProgressMode {
    if (this.json) return 'none';
    return this.io.stderr.isTTY ? 'bars' : 'lines';
  }

  /** The CA to trust and the client certificate to present, read from the files the configuration names. */
  async tlsFiles(): Promise<{ ca?: string; cert?: string; key?: string }> {
    const cfg = await this.resolvedConfig();
    const { readFile } = await import('node:fs/promises');
    const read = async (what: string, path: string | undefined): Promise<string | undefined> =>
      path === undefined
        ? undefined
        : readFile(path, 'utf8').catch((err: Error) => {
            throw new CliError('CONFIG_ERROR', `cannot read the ${what} ${path}: ${err.message}`, { exitCode: 2 });
          });
    const [ca, cert, key] = await Promise.all([read('CA certificate', cfg.cacert), read('client certificate', cfg.cert), read('client key', cfg.key)]);
    return { ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) };
  }

  async resolvedConfig(): Promise<CliConfig> {
    this.config ??= await resolveConfig(this.globals, this.io.env);
    return this.config;
  }

  /** The control-plane client; a token is required unless nothing will be sent (--dry-run). */
  async api(): Promise<ApiClient> {
    if (this.client) return this.client;
    const cfg = await this.resolvedConfig();
    if (this.debug) {
      this.diag(`[debug] host ${cfg.host} (from ${cfg.hostSource}); token ${cfg.tokenSource ? `from ${cfg.tokenSource}` : 'not set'}${cfg.file ? `; config file ${cfg.file}` : ''}`);
    }
    if (!cfg.token && !this.dryRun) {
      throw new CliError('CONFIG_ERROR', 'no API token: pass --token, set STOWAGE_TOKEN, or put "token" in the config file', { exitCode: 2 });
    }
    let ca: string | undefined;
    if (cfg.cacert) {
      const { readFile } = await import('node:fs/promises');
      ca = await readFile(cfg.cacert, 'utf8').catch((err: Error) => {
        throw new CliError('CONFIG_ERROR', `cannot read the CA certificate ${cfg.cacert}: ${err.message}`, { exitCode: 2 });
      });
    }
    this.client = new ApiClient({
      host: cfg.host,
      ...(ca ? { ca } : {}),
      token: cfg.token,
      debug: this.debug,
      dryRun: this.dryRun,
      json: this.view.mode === 'json',
      stdout: this.io.stdout,
      stderr: this.io.stderr,
    });
    return this.client;
  }

  /** A single-object answer: the whole object with -o json|yaml, --format over it, else the human rendering. */
  print(value: unknown, human: () => string): void {
    writeLine(this.io.stdout, renderObject(value, human, this.view));
  }

  /** A list answer: the whole object with -o json|yaml, --format per row, else a table (-o wide: more columns). */
  list<T>(value: unknown, view: ListView<T>): void {
    writeLine(this.io.stdout, renderList(value, view, this.view));
  }

  /** A diagnostic line on stderr. */
  diag(line: string): void {
    writeLine(this.io.stderr, line);
  }
}
