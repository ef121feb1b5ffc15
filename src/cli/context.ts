import { type CliConfig, resolveConfig } from './config.js';
import { CliError } from './errors.js';
import { ApiClient } from './http.js';
import { type CliIo, writeLine } from './io.js';
import { toJson } from './output.js';
import { type ProgressMode, progressMode } from './progress.js';

/** The global flags, as commander parsed them. */
export interface GlobalOptions {
  host?: string | undefined;
  token?: string | undefined;
  config?: string | undefined;
  json?: boolean | undefined;
  debug?: boolean | undefined;
  dryRun?: boolean | undefined;
}

/** What every command gets: the streams, the global flags, the API client and the output helpers. */
export class CommandContext {
  readonly json: boolean;
  readonly debug: boolean;
  readonly dryRun: boolean;
  private client: ApiClient | undefined;
  private config: CliConfig | undefined;

  constructor(
    readonly io: CliIo,
    private readonly globals: GlobalOptions,
  ) {
    this.json = globals.json === true;
    this.debug = globals.debug === true;
    this.dryRun = globals.dryRun === true;
  }

  get progress(): ProgressMode {
    return progressMode({ json: this.json, stream: this.io.stderr });
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
    this.client = new ApiClient({
      host: cfg.host,
      token: cfg.token,
      debug: this.debug,
      dryRun: this.dryRun,
      json: this.json,
      stdout: this.io.stdout,
      stderr: this.io.stderr,
    });
    return this.client;
  }

  /** The result: the whole object with --json, else the human rendering. */
  print(value: unknown, human: () => string): void {
    writeLine(this.io.stdout, this.json ? toJson(value) : human());
  }

  /** A diagnostic line on stderr. */
  diag(line: string): void {
    writeLine(this.io.stderr, line);
  }
}
