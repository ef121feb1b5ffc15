import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import type { ControlContext } from '../context.js';
import { canSeeOperation } from '../rest/guards.js';
import { callerOf, requireCaller } from '../tenancy/authenticate.js';
import type { Operation } from '../wire.js';
import { isTerminal, type TargetChange } from '../operations/store.js';
import { taskEvent, taskEventName } from './events.js';
import { operationIdOf } from './ids.js';

/**
 * Server-sent events for a background task (an operation), as Backend.AI's manager sends them:
 *   event: bgtask_updated   retry: 5   data: TaskEvent   — the current state at once, then every change
 *   event: bgtask_done | bgtask_failed | bgtask_cancelled  — the final state
 *   event: server_close     data: {}   — and the stream ends
 * Backend.AI's client reconnects after `retry` (it reads seconds, so 5 as the manager sends) until it has
 * seen server_close. A task already finished yields its final event and server_close straight away. The listener is attached before the
 * snapshot is read, so no change falls between the two; repeats of an identical state are not sent.
 * Updates closer than `throttleMs` are coalesced into the latest; a comment line every `heartbeatMs`
 * keeps proxies from closing a quiet stream.
 */

export interface StreamOptions {
  /** The ID the subscriber named the task by (its UUID), echoed as task_id; the operation ID by default. */
  taskId?: string;
  heartbeatMs?: number;
  /** bgtask_updated events closer together than this are coalesced into the latest (terminal events never wait). */
  throttleMs?: number;
}

const DEFAULT_HEARTBEAT_MS = 15_000;
const DEFAULT_THROTTLE_MS = 200;
/** What Backend.AI's manager sends as `retry:`; its client sleeps that many seconds before reconnecting. */
const RETRY_HINT = 5;

/** Streams the events of operation `taskId` on `reply` (hijacked); answers 404 JSON for an unknown task. */
export async function streamTaskEvents(ctx: ControlContext, reply: FastifyReply, taskId: string, opts: StreamOptions = {}): Promise<void> {
  const publicId = opts.taskId ?? taskId;
  // Events before the snapshot is read are queued, then applied in order on top of it.
  const pending: Array<Operation | TargetChange> = [];
  let deliver: ((change: Operation | TargetChange) => void) | undefined;
  const onChange = (op: Operation) => {
    if (op.id !== taskId) return;
    if (deliver) deliver(op);
    else pending.push(op);
  };
  const onTarget = (change: TargetChange) => {
    if (change.operation_id !== taskId) return;
    if (deliver) deliver(change);
    else pending.push(change);
  };
  const unsubscribe = () => {
    ctx.operations.events.off('changed', onChange);
    ctx.operations.events.off('target', onTarget);
  };
  ctx.operations.events.on('changed', onChange);
  ctx.operations.events.on('target', onTarget);

  const snapshot = await ctx.operations.get(taskId);
  if (!snapshot) {
    unsubscribe();
    await reply.code(404).send({ error: { code: 'OPERATION_NOT_FOUND', message: `no background task ${publicId}` } });
    return;
  }

  reply.hijack();
  const raw = reply.raw;
  raw.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });

  let lastData = '';
  let ended = false;
  let seq = 0;
  const heartbeat = setInterval(() => {
    if (!ended) raw.write(': keep-alive\n\n');
  }, opts.heartbeatMs ?? DEFAULT_HEARTBEAT_MS);
  heartbeat.unref();

  const throttleMs = opts.throttleMs ?? DEFAULT_THROTTLE_MS;
  let lastSentAt = 0;
  let waiting: Operation | undefined;
  let timer: NodeJS.Timeout | undefined;
  const finish = () => {
    if (ended) return;
    ended = true;
    clearInterval(heartbeat);
    if (timer) clearTimeout(timer);
    unsubscribe();
    raw.end();
  };
  raw.on('close', finish);

  const write = (op: Operation) => {
    if (ended) return;
    const name = taskEventName(op);
    const data = JSON.stringify(taskEvent(op, publicId));
    if (data === lastData && name === 'bgtask_updated') return;
    lastData = data;
    lastSentAt = Date.now();
    if (name === 'bgtask_updated') {
      raw.write(`id: ${++seq}\nevent: ${name}\nretry: ${RETRY_HINT}\ndata: ${data}\n\n`);
      return;
    }
    raw.write(`id: ${++seq}\nevent: ${name}\ndata: ${data}\n\nevent: server_close\ndata: {}\n\n`);
    finish();
  };
  const send = (op: Operation) => {
    if (taskEventName(op) !== 'bgtask_updated' || Date.now() - lastSentAt >= throttleMs) {
      if (timer) clearTimeout(timer);
      timer = undefined;
      waiting = undefined;
      write(op);
      return;
    }
    waiting = op;
    timer ??= setTimeout(() => {
      timer = undefined;
      const next = waiting;
      waiting = undefined;
      if (next) write(next);
    }, throttleMs - (Date.now() - lastSentAt));
  };

  // This stream's own copy of the operation: a target change patches it in place (no re-read of the
  // operation), and what is sent is always its latest state.
  const current = new LiveOperation(snapshot);
  const apply = (change: Operation | TargetChange): void => {
    if (current.apply(change)) send(current.op);
  };
  send(current.op);
  // Changes queued while the snapshot was read may be older than it: apply keeps only what is newer.
  for (const change of pending) apply(change);
  pending.length = 0;
  deliver = apply;
}

/** An operation kept current from the store's events: whole snapshots replace it, target changes patch it. */
class LiveOperation {
  op: Operation;
  private index = new Map<string, number>();

  constructor(snapshot: Operation) {
    this.op = this.adopt(snapshot);
  }

  /**
   * Applies a change; false when it is older than what is held (it changes nothing then). An operation's
   * end is final whatever its timestamp: updated_at comes from the clock of whichever replica wrote it, and
   * an end stamped a little before the last progress (clocks apart, or a write that waited for the row)
   * must still end the stream rather than be taken for stale.
   */
  apply(change: Operation | TargetChange): boolean {
    if (isTerminal(this.op.status)) return false;
    if ('target' in change) {
      const i = this.index.get(change.target.machine_id);
      if (i === undefined || change.updated_at < this.op.updated_at) return false;
      this.op.targets[i] = change.target;
      this.op.updated_at = change.updated_at;
      return true;
    }
    if (change.updated_at < this.op.updated_at && !isTerminal(change.status)) return false;
    this.op = this.adopt(change);
    return true;
  }

  private adopt(op: Operation): Operation {
    this.index = new Map(op.targets.map((t, i) => [t.machine_id, i]));
    return { ...op, targets: [...op.targets] };
  }
}

/** GET /events/background-task?task_id=… (Backend.AI's path), Bearer API key or a Backend.AI keypair signature. */
export const taskEventRoutes: FastifyPluginAsync<{ ctx: ControlContext } & StreamOptions> = async (app, opts) => {
  const { ctx } = opts;
  app.get('/events/background-task', { onRequest: requireCaller(ctx) }, async (req, reply) => {
    const principal = callerOf(req);
    const taskId = (req.query as Record<string, unknown>)['task_id'];
    if (typeof taskId !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(taskId)) {
      return reply.code(400).send({ error: { code: 'BAD_REQUEST', message: 'task_id is required (a task UUID or an operation ID)' } });
    }
    const opId = await operationIdOf(ctx.db, taskId);
    // Another user's task is as unknown as a missing one.
    const op = opId === undefined ? undefined : await ctx.operations.get(opId);
    if (!op || !canSeeOperation(principal, op.actor)) {
      return reply.code(404).send({ error: { code: 'OPERATION_NOT_FOUND', message: `no background task ${taskId}` } });
    }
    const { ctx: _ctx, ...streamOpts } = opts;
    await streamTaskEvents(ctx, reply, op.id, { ...streamOpts, taskId });
    return reply;
  });
};
