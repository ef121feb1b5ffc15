import type { FastifyReply } from 'fastify';
import type { ControlContext } from '../context.js';
import { isTerminal } from '../operations/store.js';
import type { Operation, TaskEvent } from '../wire.js';

/**
 * Background-task progress as Server-Sent Events. A task is an operation; its task_id is the operation id.
 *
 *   event: bgtask_updated   data: TaskEvent   (on every change, at most every THROTTLE_MS)
 *   event: bgtask_done | bgtask_failed | bgtask_cancelled   data: TaskEvent   (then the stream ends)
 *
 * Subscribing after the end yields the terminal event at once. The subscription is made before the first
 * snapshot is read, so no change between the two is missed.
 */

const THROTTLE_MS = 200;
const KEEPALIVE_MS = 15_000;

export function taskEvent(op: Operation): TaskEvent {
  const bytesDone = op.targets.reduce((n, t) => n + t.bytes_transferred, 0);
  const targetsDone = op.targets.filter((t) => t.status !== 'pending' && t.status !== 'running').length;
  // Work with targets counts targets; work without (rescan) reports its own units.
  const current = op.targets.length > 0 ? targetsDone : op.progress.current;
  const total = op.targets.length > 0 ? op.targets.length : op.progress.total;
  const message = op.progress.message || (op.targets.length > 0 ? `${op.stage}: ${targetsDone}/${op.targets.length} targets, ${bytesDone} bytes` : op.stage);
  return { task_id: op.id, current_progress: current, total_progress: total, message, operation: op };
}

function terminalEventName(op: Operation): string {
  if (op.status === 'succeeded') return 'bgtask_done';
  if (op.status === 'cancelled') return 'bgtask_cancelled';
  return 'bgtask_failed';
}

export async function streamTaskEvents(ctx: ControlContext, reply: FastifyReply, taskId: string): Promise<void> {
  const raw = reply.raw;
  reply.hijack();
  raw.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
  const send = (name: string, op: Operation): void => {
    raw.write(`event: ${name}\nid: ${op.updated_at}\ndata: ${JSON.stringify(taskEvent(op))}\n\n`);
  };

  await new Promise<void>((resolve) => {
    let pending: Operation | undefined;
    let timer: NodeJS.Timeout | undefined;
    let lastSent = 0;
    let ended = false;
    const finish = (): void => {
      if (ended) return;
      ended = true;
      ctx.operations.events.off('changed', onChange);
      clearInterval(keepalive);
      if (timer) clearTimeout(timer);
      raw.end();
      resolve();
    };
    const flush = (): void => {
      timer = undefined;
      const op = pending;
      pending = undefined;
      if (!op || ended) return;
      lastSent = Date.now();
      if (isTerminal(op.status)) {
        send(terminalEventName(op), op);
        finish();
      } else {
        send('bgtask_updated', op);
      }
    };
    const onChange = (op: Operation): void => {
      if (op.id !== taskId || ended) return;
      pending = op;
      if (isTerminal(op.status)) flush();
      else if (!timer) timer = setTimeout(flush, Math.max(0, THROTTLE_MS - (Date.now() - lastSent)));
    };
    const keepalive = setInterval(() => raw.write(': keepalive\n\n'), KEEPALIVE_MS);
    ctx.operations.events.on('changed', onChange);
    raw.on('close', finish);
    const current = ctx.operations.get(taskId);
    if (current) onChange(current);
    else finish();
  });
}
