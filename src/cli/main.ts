import { createRequire } from 'node:module';
import type * as Commander from 'commander';
import { STOWAGE_VERSION } from '../agent/version.js';
import { registerCatalogCommands } from './commands/catalog.js';
import { registerDistribute } from './commands/distribute.js';
import { registerImageList } from './commands/images.js';
import { registerApiKey, registerMachine } from './commands/machine.js';
import { registerOperation } from './commands/operation.js';
import { registerPush } from './commands/push.js';
import { registerStatus } from './commands/status.js';
import { registerTaskCommands } from './commands/task.js';
import type { Action, Bind } from './commands/types.js';
import { CommandContext, type GlobalOptions } from './context.js';
import { DryRunStop, usageError } from './errors.js';
import { type CliIo, processIo, writeLine } from './io.js';
import { printErrorObject, reportError } from './report.js';
import { OUTPUT_MODES, isMachineOutput, viewOptionsFromArgv } from './view.js';

/**
 * stowctl: the operator CLI over the control plane's REST API. main() never exits the process: it
 * returns the exit code (0 ok, 1 an operation, target or request failed, 2 usage or configuration),
 * so tests and other programs can drive it with their own streams.
 *
 * Startup is kept short: this module and the command declarations load only commander and small
 * helpers (the small HTTP client and config reader among them); what a command does that is heavy
 * (node:http, schemas, image store, progress bars) is imported when it runs.
 */

// commander is CommonJS: require() spares startup the ESM wrapper and the scan of its exports import() does.
const { Command, CommanderError } = createRequire(import.meta.url)('commander') as typeof Commander;
type Command = Commander.Command;

function buildProgram(io: CliIo, bind: Bind): Command {
  const program = new Command('stowctl')
    .description('Stowage operator CLI: where each image is, and putting images on machines')
    .version(STOWAGE_VERSION)
    .option('--host <url>', 'control plane URL (env STOWAGE_HOST; default http://127.0.0.1:5070)')
    .option('--token <token>', 'API token (env STOWAGE_TOKEN)')
    .option('--cacert <file>', 'CA certificate (PEM) to trust for an https:// control plane, e.g. its tls/ca.pem (env STOWAGE_CACERT)')
    .option('--cert <file>', 'client certificate (PEM, from stowd client-cert) presented to the agents of a TLS cluster on push (env STOWAGE_CERT)')
    .option('--key <file>', 'key of --cert (env STOWAGE_KEY)')
    .option('--config <file>', 'config file {host, token} (default $XDG_CONFIG_HOME/stowage/stowctl.json)')
    .option('-o, --output <format>', `output: ${OUTPUT_MODES.join(', ')} (table is the default)`)
    .option('--json', 'print whole response objects (and errors) as JSON (= -o json)')
    .option('--format <template>', 'print each row through a Go-like template: \'{{.Digest}} {{join .References ","}}\', \'{{json .}}\', \'table …\'')
    .option('--no-trunc', 'do not shorten digests and lists')
    .option('--debug', 'log each request and response line to stderr (token redacted)')
    .option('--dry-run', 'print the request that would be sent, send nothing')
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
    });

  const image = program.command('image').description('images on the machines of the cluster');
  registerImageList(image, bind);
  registerStatus(image, bind);
  registerDistribute(image, bind);
  registerPush(image, bind);
  registerOperation(image, bind);
  registerOperation(program, bind);
  registerMachine(program, bind);
  registerApiKey(program, bind);
  registerCatalogCommands(program, image, bind);
  registerTaskCommands(program, bind);
  program
    .command('completion')
    .description('print a shell completion script: source <(stowctl completion bash)')
    .argument('<shell>', 'bash or zsh')
    .action(
      bind(async (ctx, _opts, [shell]) => {
        const { bashCompletion, zshCompletion } = await import('./completion.js');
        if (shell === 'bash') ctx.io.stdout.write(bashCompletion(program));
        else if (shell === 'zsh') ctx.io.stdout.write(zshCompletion(program));
        else throw usageError(`completion: "${shell}" is not bash or zsh`);
      }),
    );

  // Every (sub)command reports errors through exitOverride instead of exiting, and prints to our streams.
  const configure = (cmd: Command): void => {
    cmd.exitOverride();
    cmd.configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) });
    for (const sub of cmd.commands) configure(sub);
  };
  configure(program);
  return program;
}

export async function main(argv: readonly string[], io: CliIo = processIo()): Promise<number> {
  let exitCode = 0;
  let ctx: CommandContext | undefined;
  // The output format, known even when parsing fails: errors then come as objects in that format.
  const early = viewOptionsFromArgv(argv);
  const machine = isMachineOutput(early);
  // Errors come as objects only where the output is JSON or YAML; a --format template's error is text on
  // stderr, as docker prints it (the template is the user's layout, not something a script parses).
  const errorsAsObjects = early.mode === 'json' || early.mode === 'yaml';

  const bind: Bind = (fn: Action) => async (...commanderArgs: unknown[]) => {
    const cmd = commanderArgs[commanderArgs.length - 1] as Command;
    ctx = new CommandContext(io, cmd.optsWithGlobals<GlobalOptions>());
    const code = await fn(ctx, cmd.opts(), cmd.processedArgs as string[]);
    exitCode = code ?? 0;
  };

  const program = buildProgram(io, bind);
  // For programs, commander's own error text would be a second, non-JSON message: ours replaces it.
  if (machine) silenceErrors(program, io);

  try {
    await program.parseAsync([...argv], { from: 'user' });
    return exitCode;
  } catch (err) {
    if (err instanceof DryRunStop) return 0;
    if (err instanceof CommanderError) {
      // --help and --version; a bare `stowctl image` (help shown as an error) is a usage error.
      if (err.exitCode === 0) return 0;
      const e = usageError(err.code === 'commander.help' ? 'a command is required' : err.message.replace(/^error: /, ''));
      if (errorsAsObjects) printErrorObject(io, early.mode, e.toJSON());
      else if (machine) writeLine(io.stderr, `stowctl: ${e.message}`);
      return 2;
    }
    return reportError(err, io, early, ctx);
  }
}

function silenceErrors(cmd: Command, io: CliIo): void {
  cmd.configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s), outputError: () => {} });
  for (const sub of cmd.commands) silenceErrors(sub, io);
}
