import { isStowageError } from '../errors.js';

/**
 * The CLI's error: a stable SCREAMING_SNAKE code (the control plane's own codes pass through unchanged,
 * so they are not limited to StowageError's set) and the exit code it ends the process with:
 * 2 for usage and configuration errors, 1 for everything that failed at run time.
 */
export class CliError extends Error {
  readonly code: string;
  readonly exitCode: 1 | 2;
  readonly details: Record<string, unknown> | undefined;
  /** HTTP status when the control plane answered with this error. */
  readonly status: number | undefined;

  constructor(code: string, message: string, opts: { exitCode?: 1 | 2; details?: Record<string, unknown>; status?: number; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'CliError';
    this.code = code;
    this.exitCode = opts.exitCode ?? 1;
    this.details = opts.details;
    this.status = opts.status;
  }

  toJSON(): { code: string; message: string; details?: Record<string, unknown> } {
    return this.details ? { code: this.code, message: this.message, details: this.details } : { code: this.code, message: this.message };
  }
}

/** A bad flag, argument or combination of them (exit 2). */
export function usageError(message: string, code = 'USAGE'): CliError {
  return new CliError(code, message, { exitCode: 2 });
}

/** Local errors that mean the operator asked for something malformed: exit 2 like any usage error. */
const USAGE_CODES = new Set(['INVALID_DIGEST', 'INVALID_REFERENCE', 'INVALID_PLATFORM']);

/** Any thrown value as a CliError. StowageErrors keep their code. */
export function toCliError(err: unknown): CliError {
  if (err instanceof CliError) return err;
  if (isStowageError(err)) {
    return new CliError(err.code, err.message, {
      exitCode: USAGE_CODES.has(err.code) ? 2 : 1,
      ...(err.details ? { details: err.details } : {}),
      cause: err,
    });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new CliError('INTERNAL', message, { cause: err });
}

/** Thrown by the API client once --dry-run printed the request it would send: ends the command with 0. */
export class DryRunStop extends Error {
  constructor() {
    super('dry run: nothing sent');
    this.name = 'DryRunStop';
  }
}
