import { readFileSync } from 'node:fs';
import { imageStatus } from './commands/image-status.js';
import { CommandContext, type GlobalOptions } from './context.js';
import { DryRunStop } from './errors.js';
import { digestArg, machineArg } from './flags.js';
import { type CliIo, processIo } from './io.js';
import { reportError } from './report.js';
import { viewOptionsFromArgv } from './view.js';

/**
 * The two commands run most, answered without loading commander and declaring every command (which is
 * most of what a short stowctl call spends): `stowctl --help` and `stowctl image status`. Anything else,
 * and any spelling of these this parser does not know for sure reads the same as commander, returns
 * undefined, and main() (commander) takes the command. The answers are main()'s own: the same action
 * (commands/image-status.ts), context and error report (report.ts); test/cli/fast-path.test.ts compares
 * them. Built, it is also in dist/stowctl-fast.cjs, which bin/stowctl.js runs first (src/bin/stowctl-fast.ts).
 */

/** The help text the build rendered through commander (tsup.config.ts), beside the built code. */
const BUILT_HELP = new URL('./stowctl-help.txt', import.meta.url);

/** Root options taking a value, by every spelling, under their commander attribute names. */
const VALUE_OPTIONS: Record<string, keyof GlobalOptions> = {
  '--host': 'host',
  '--token': 'token',
  '--cacert': 'cacert',
  '--cert': 'cert',
  '--key': 'key',
  '--config': 'config',
  '-o': 'output',
  '--output': 'output',
  '--format': 'format',
};
const FLAGS: Record<string, Partial<GlobalOptions>> = {
  '--json': { json: true },
  '--no-trunc': { trunc: false },
  '--debug': { debug: true },
  '--dry-run': { dryRun: true },
};
/** `image status` options (commander reads them only after `status`), with their checks. */
const STATUS_OPTIONS: Record<string, { name: string; check: (value: string) => string }> = {
  '--digest': { name: 'digest', check: digestArg('--digest') },
  '--machine': { name: 'machine', check: machineArg('--machine') },
};

export async function fastPath(argv: readonly string[], io: CliIo = processIo(), helpFile: URL = BUILT_HELP): Promise<number | undefined> {
  if (argv.length === 1 && (argv[0] === '--help' || argv[0] === '-h')) return builtHelp(io, helpFile);
  const parsed = parseImageStatus(argv);
  if (!parsed) return undefined;

  const early = viewOptionsFromArgv(argv);
  let ctx: CommandContext | undefined;
  try {
    // In commander's order: option values are checked while parsing, the output flags when the context is made.
    const opts: Record<string, unknown> = {};
    for (const [name, check, value] of parsed.checks) opts[name] = check(value);
    ctx = new CommandContext(io, parsed.globals);
    await imageStatus(ctx, opts, parsed.operands);
    return 0;
  } catch (err) {
    if (err instanceof DryRunStop) return 0;
    return reportError(err, io, early, ctx);
  }
}

/** The build's rendering of `stowctl --help`, where commander would render the same: at its default width of 80. */
function builtHelp(io: CliIo, helpFile: URL): number | undefined {
  // commander wraps help at process.stdout's width when it is a terminal, else at 80.
  if (((process.stdout.isTTY ? process.stdout.columns : undefined) ?? 80) !== 80) return undefined;
  let text: string;
  try {
    text = readFileSync(helpFile, 'utf8');
  } catch {
    return undefined; // running from source, or a build without it
  }
  io.stdout.write(text);
  return 0;
}

interface ParsedStatus {
  globals: GlobalOptions;
  checks: Array<[string, (value: string) => string, string]>;
  /** The [image] argument, when given. */
  operands: string[];
}

/**
 * `image status [image]` with root options anywhere and --digest/--machine after `status`, each option as
 * `--opt value`, `--opt=value` or `-ovalue`. Undefined for anything else, and for values starting with "-"
 * (commander's two-pass parsing may read those differently).
 */
function parseImageStatus(argv: readonly string[]): ParsedStatus | undefined {
  const globals: GlobalOptions = {};
  const checks: ParsedStatus['checks'] = [];
  const operands: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const flag = eq > 0 ? arg.slice(0, eq) : arg.startsWith('-o') && arg.length > 2 ? '-o' : arg;
    const inline = eq > 0 ? arg.slice(eq + 1) : flag === '-o' && arg !== '-o' ? arg.slice(2) : undefined;
    const takesValue = flag in VALUE_OPTIONS || (flag in STATUS_OPTIONS && operands.length >= 2);
    if (takesValue) {
      const value = inline ?? argv[++i];
      if (value === undefined || value.startsWith('-')) return undefined;
      if (flag in VALUE_OPTIONS) (globals as Record<string, string>)[VALUE_OPTIONS[flag]!] = value;
      else checks.push([STATUS_OPTIONS[flag]!.name, STATUS_OPTIONS[flag]!.check, value]);
    } else if (inline === undefined && flag in FLAGS) {
      Object.assign(globals, FLAGS[flag]);
    } else if (arg.startsWith('-')) {
      return undefined;
    } else {
      operands.push(arg);
    }
  }
  const [group, command, ...rest] = operands;
  if (group !== 'image' || command !== 'status' || rest.length > 1) return undefined;
  return { globals, checks, operands: rest };
}
