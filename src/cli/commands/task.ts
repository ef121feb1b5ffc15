import type { Command } from 'commander';
import { usageError } from '../errors.js';
import type { Bind } from './types.js';

/**
 * stowctl task watch <id>: follows a background task (an operation) until it ends (task-watch.ts).
 * Exit 0 when the task succeeded, 1 when it failed or was cancelled.
 */
export function registerTaskCommands(program: Command, bind: Bind): void {
  const task = program.command('task').description('background tasks (rescan, preload, unload)');
  task
    .command('watch')
    .argument('<id>', 'task ID (the UUID a mutation answers, or the operation ID, op-…)')
    .description('follow a background task until it ends, with a progress bar on a terminal')
    .action(
      bind(async (ctx, _opts, args) => {
        const id = args[0] ?? '';
        if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw usageError(`invalid task ID "${id}"`);
        const { watchTask } = await import('../task-watch.js');
        const outcome = await watchTask(ctx, id);
        ctx.print(outcome, () => `${outcome.event === 'bgtask_done' ? 'done' : outcome.event.replace('bgtask_', '')}: ${outcome.data.message}`);
        // A partial success ends bgtask_done (as Backend.AI sends it) but is not all targets ok.
        return outcome.event === 'bgtask_done' && outcome.data.operation.status === 'succeeded' ? 0 : 1;
      }),
    );
}
