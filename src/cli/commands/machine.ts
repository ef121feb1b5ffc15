import type { Command } from 'commander';
import type { Bind } from './types.js';

export function registerMachine(program: Command, bind: Bind): void {
  const machine = program.command('machine').description('machines of the cluster');
  machine
    .command('list')
    .alias('ls')
    .description('list the machines that joined, with their status and image count')
    .action(
      bind(async (ctx) => {
        const [{ machinesResponseSchema }, { machinesView }] = await Promise.all([import('../responses.js'), import('../render.js')]);
        const api = await ctx.api();
        const res = await api.call('GET', '/api/v1/machines', machinesResponseSchema);
        ctx.list(res, machinesView(res.machines));
      }),
    );
  machine
    .command('revoke')
    .description('revoke a machine: its secret stops working at once, it is forgotten, and its name may not join again')
    .argument('<id>', 'machine ID')
    .action(
      bind(async (ctx, _opts, [id]) => {
        const { anyObjectSchema } = await import('../responses.js');
        const api = await ctx.api();
        const res = await api.call('DELETE', `/api/v1/machines/${encodeURIComponent(id!)}`, anyObjectSchema);
        ctx.print(res, () => `machine ${id} revoked`);
      }),
    );
}

/** `stowctl api-key revoke`: an API key (yours, or any as the superadmin) stops working everywhere at once. */
export function registerApiKey(program: Command, bind: Bind): void {
  const key = program.command('api-key').description('API keys');
  key
    .command('revoke')
    .description('revoke an API key and every registry token issued for it, on the control plane and every agent')
    .argument('<key>', 'the key (stk_…) or its 16-character ID')
    .action(
      bind(async (ctx, _opts, [k]) => {
        const { anyObjectSchema } = await import('../responses.js');
        const api = await ctx.api();
        const res = await api.call('POST', '/api/v1/api-keys/revoke', anyObjectSchema, { body: { key: k } });
        const id = (res as { revoked?: { key_id?: string } }).revoked?.key_id ?? '';
        ctx.print(res, () => `API key ${id} revoked`);
      }),
    );
}
