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
}
