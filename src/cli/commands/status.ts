import type { Command } from 'commander';
import { usageError } from '../errors.js';
import { digestArg, machineArg } from '../flags.js';
import { renderAvailability, renderInspect } from '../render.js';
import { imageInspectSchema, statusResponseSchema } from '../responses.js';
import type { Bind } from './types.js';

/** `image status` and `image inspect`: read-only questions about where an image is. */
export function registerStatus(image: Command, bind: Bind): void {
  image
    .command('status')
    .description('which image is on which machine (short digests; full ones with --json)')
    .option('--digest <digest>', 'only this manifest or index digest', digestArg('--digest'))
    .option('--machine <id>', 'only this machine', machineArg('--machine'))
    .action(
      bind(async (ctx, opts) => {
        const api = await ctx.api();
        const query = { digest: opts['digest'] as string | undefined, machine: opts['machine'] as string | undefined };
        const res = await api.call('GET', '/api/v1/images/status', statusResponseSchema, { query });
        ctx.print(res, () => renderAvailability(res.records));
      }),
    );

  image
    .command('inspect')
    .description('an image by digest or reference: its platforms, layers and where it is')
    .option('--digest <digest>', 'manifest or index digest', digestArg('--digest'))
    .option('--reference <ref>', 'a reference a machine holds ("alpine:3.19")')
    .option('--machine <id>', 'read it from this machine', machineArg('--machine'))
    .action(
      bind(async (ctx, opts) => {
        const digest = opts['digest'] as string | undefined;
        const reference = opts['reference'] as string | undefined;
        if (digest === undefined && reference === undefined) throw usageError('image inspect needs --digest or --reference');
        const api = await ctx.api();
        const query = { digest, reference, machine: opts['machine'] as string | undefined };
        const res = await api.call('GET', '/api/v1/images/inspect', imageInspectSchema, { query });
        ctx.print(res, () => renderInspect(res));
      }),
    );
}
