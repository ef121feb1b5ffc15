import type { Command } from 'commander';
import { usageError } from '../errors.js';
import { digestArg, machineArg, machineListArg, platformArg } from '../flags.js';
import type { Bind } from './types.js';

export function registerDistribute(image: Command, bind: Bind): void {
  image
    .command('distribute')
    .description('copy an image from one machine onto others (only the blobs each lacks), with live progress')
    .argument('[image]', 'reference, digest, unique digest prefix or image ID, as the source holds it')
    .option('--digest <digest>', 'manifest or index digest (instead of an image argument)', digestArg('--digest'))
    .requiredOption('--from <id>', 'source machine', machineArg('--from'))
    .requiredOption('--to <id>', 'target machine (repeat, or comma-separate)', machineListArg('--to'))
    .option('--platform <os/arch[/variant]>', 'the platform to take from an index', platformArg)
    .action(
      bind(async (ctx, opts, [name]) => {
        const to = opts['to'] as string[];
        if (to.length === 0) throw usageError('--to needs at least one machine');
        let digest = opts['digest'] as string | undefined;
        if ((digest === undefined) === (name === undefined)) throw usageError('image distribute takes an image or --digest (one of them)');
        const from = opts['from'] as string;
        const [{ operationResponseSchema }, { finish }, { resolveImage }] = await Promise.all([
          import('../responses.js'),
          import('../finish.js'),
          import('../resolve.js'),
        ]);
        const api = await ctx.api();
        // The name is looked up among what the source holds: the one place the image must be.
        if (name !== undefined) digest = (await resolveImage(api, name, from)).digest;
        const body: { digest: string; from: string; to: string[]; platform?: string } = { digest: digest!, from, to };
        if (opts['platform'] !== undefined) body.platform = opts['platform'] as string;
        const res = await api.call('POST', '/api/v1/operations/distribute', operationResponseSchema, { body });
        return finish(ctx, api, res.operation);
      }),
    );
}
