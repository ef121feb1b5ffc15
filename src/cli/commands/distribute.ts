import type { Command } from 'commander';
import type { DistributeRequest, Operation } from '../../control/wire.js';
import type { CommandContext } from '../context.js';
import { usageError } from '../errors.js';
import { digestArg, machineArg, machineListArg, platformArg } from '../flags.js';
import { followOperation, operationExitCode } from '../follow.js';
import type { ApiClient } from '../http.js';
import { operationView } from '../progress.js';
import { renderResult } from '../render.js';
import { operationResponseSchema } from '../responses.js';
import type { Bind } from './types.js';

export function registerDistribute(image: Command, bind: Bind): void {
  image
    .command('distribute')
    .description('copy an image from one machine onto others (only the blobs each lacks), with live progress')
    .requiredOption('--digest <digest>', 'manifest or index digest', digestArg('--digest'))
    .requiredOption('--from <id>', 'source machine', machineArg('--from'))
    .requiredOption('--to <id>', 'target machine (repeat, or comma-separate)', machineListArg('--to'))
    .option('--platform <os/arch[/variant]>', 'the platform to take from an index', platformArg)
    .action(
      bind(async (ctx, opts) => {
        const to = opts['to'] as string[];
        if (to.length === 0) throw usageError('--to needs at least one machine');
        const body: DistributeRequest = { digest: opts['digest'] as string, from: opts['from'] as string, to };
        if (opts['platform'] !== undefined) body.platform = opts['platform'] as string;
        const api = await ctx.api();
        const res = await api.call('POST', '/api/v1/operations/distribute', operationResponseSchema, { body });
        return finish(ctx, api, res.operation);
      }),
    );
}

/** Follows an operation to its end, prints the result (the final {operation} with --json), and gives the exit code. */
export async function finish(ctx: CommandContext, api: ApiClient, op: Operation): Promise<number> {
  const view = operationView(ctx.progress, ctx.io.stderr);
  let final: Operation;
  try {
    final = await followOperation(api, op, view);
  } finally {
    view.stop();
  }
  ctx.print({ operation: final }, () => renderResult(final));
  return operationExitCode(final);
}
