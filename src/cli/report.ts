import type { CommandContext } from './context.js';
import { toCliError } from './errors.js';
import { type CliIo, writeLine } from './io.js';
import { toJson } from './output.js';
import type { ViewOptions } from './view.js';
import { toYaml } from './yaml.js';

/**
 * How a failed command ends, whichever parser ran it (main.ts through commander, fast-path.ts without):
 * the error as an object on stdout where the output is JSON or YAML, else one line on stderr; the
 * return value is the exit code. `early` is the output format read from argv, used when the command's
 * context was never made (an option value refused while parsing).
 */
export function reportError(err: unknown, io: CliIo, early: ViewOptions, ctx: CommandContext | undefined): 1 | 2 {
  const e = toCliError(err);
  const mode = ctx ? ctx.view.mode : early.mode;
  if (mode === 'json' || mode === 'yaml') {
    printErrorObject(io, early.mode, e.toJSON());
  } else {
    writeLine(io.stderr, `stowctl: ${e.message}${e.code !== 'USAGE' ? ` [${e.code}]` : ''}`);
  }
  return e.exitCode;
}

/** `{error: …}` on stdout, as YAML with -o yaml and JSON otherwise. */
export function printErrorObject(io: CliIo, mode: ViewOptions['mode'], error: unknown): void {
  writeLine(io.stdout, mode === 'yaml' ? toYaml({ error }) : toJson({ error }));
}
