import type { Command } from 'commander';
import { operationKinds, operationStatuses } from '../../control/wire-values.js';
import { enumArg, positiveIntArg } from '../flags.js';
import type { Bind } from './types.js';

/** `operation list|get|cancel`, registered under `image` and at the top level alike. */
export function registerOperation(parent: Command, bind: Bind): void {
  const op = parent.command('operation').alias('op').description('operations (push, distribute, …) and their per-target results');
  op.command('list')
    .alias('ls')
    .description('list operations, newest first')
    .option('--kind <kind>', `only this kind (${operationKinds.join(', ')})`, enumArg('--kind', operationKinds))
    .option('--status <status>', `only this status (${operationStatuses.join(', ')})`, enumArg('--status', operationStatuses))
    .option('--limit <n>', 'at most this many', positiveIntArg('--limit'))
    .action(
      bind(async (ctx, opts) => {
        const [{ operationsResponseSchema }, { operationsView }] = await Promise.all([import('../responses.js'), import('../render.js')]);
        const api = await ctx.api();
        const query = { kind: opts['kind'] as string | undefined, status: opts['status'] as string | undefined, limit: opts['limit'] as number | undefined };
        const res = await api.call('GET', '/api/v1/operations', operationsResponseSchema, { query });
        ctx.list(res, operationsView(res.operations));
      }),
    );
  op.command('get')
    .description('show one operation with its per-target results')
    .argument('<id>', 'operation ID (op-…)')
    .action(
      bind(async (ctx, _opts, [id]) => {
        const [{ operationResponseSchema }, { renderOperation }] = await Promise.all([import('../responses.js'), import('../render.js')]);
        const api = await ctx.api();
        const res = await api.call('GET', `/api/v1/operations/${encodeURIComponent(id!)}`, operationResponseSchema);
        ctx.print(res, () => renderOperation(res.operation));
      }),
    );
  op.command('cancel')
    .description('cancel an operation that has not ended; targets not finished fail with CANCELLED')
    .argument('<id>', 'operation ID (op-…)')
    .action(
      bind(async (ctx, _opts, [id]) => {
        const [{ operationResponseSchema }, { renderOperation }] = await Promise.all([import('../responses.js'), import('../render.js')]);
        const api = await ctx.api();
        const res = await api.call('POST', `/api/v1/operations/${encodeURIComponent(id!)}/cancel`, operationResponseSchema);
        ctx.print(res, () => renderOperation(res.operation));
      }),
    );
}
