import type { Operation } from '../control/wire.js';
import type { CommandContext } from './context.js';
import { followOperation, operationExitCode } from './follow.js';
import type { ApiClient } from './http.js';
import { operationView } from './progress.js';
import { renderResult } from './render.js';

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
