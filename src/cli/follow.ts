import { setTimeout as sleep } from 'node:timers/promises';
import type { z } from 'zod';
import { type Operation, TERMINAL_OPERATION_STATUSES, taskEventSchema } from '../control/wire.js';
import { CliError } from './errors.js';
import type { ApiClient } from './http.js';
import type { OperationView } from './progress.js';
import { operationResponseSchema } from './responses.js';
import { readSse } from './sse.js';

/**
 * Follows an operation to its end over GET /api/v1/operations/:id/events (SSE). A dropped stream (a
 * restarting control plane, a proxy timeout) is reopened — subscribing after the end yields the final
 * event at once — until no connection succeeded for `reconnectWindowMs`.
 */

const TERMINAL_EVENTS = new Set(['bgtask_done', 'bgtask_failed', 'bgtask_cancelled']);

export function isTerminal(op: Operation): boolean {
  return TERMINAL_OPERATION_STATUSES.includes(op.status);
}

export interface FollowOptions {
  /** Give up after this long without a working connection (default 60 s). */
  reconnectWindowMs?: number;
}

export async function followOperation(api: ApiClient, start: Operation, view: OperationView, opts: FollowOptions = {}): Promise<Operation> {
  const windowMs = opts.reconnectWindowMs ?? 60_000;
  const path = `/api/v1/operations/${encodeURIComponent(start.id)}`;
  let last = start;
  view.update(last);
  if (isTerminal(last)) return last;

  let lastContact = Date.now();
  let delay = 250;
  let lastError: unknown;
  for (;;) {
    try {
      const body = await api.stream(`${path}/events`, 'text/event-stream');
      lastContact = Date.now();
      delay = 250;
      try {
        for await (const ev of readSse(body as AsyncIterable<Uint8Array>)) {
          lastContact = Date.now();
          api.trace(`< event ${ev.event} (${ev.data.length} bytes)`);
          if (ev.event !== 'bgtask_updated' && !TERMINAL_EVENTS.has(ev.event)) continue;
          last = parseTaskEvent(ev.data, ev.event).operation;
          view.update(last);
          if (TERMINAL_EVENTS.has(ev.event)) return last;
        }
      } finally {
        body.destroy();
      }
    } catch (err) {
      // An answer of the control plane (404, 401, …) or a malformed event will not get better by retrying.
      if (err instanceof CliError && (err.status !== undefined || err.code === 'BAD_RESPONSE' || err.code === 'TOO_LARGE')) throw err;
      lastError = err;
    }
    // The stream ended without a final event: ask for the operation itself before reopening it.
    try {
      const got = await api.call('GET', path, operationResponseSchema);
      lastContact = Date.now();
      last = got.operation;
      view.update(last);
      if (isTerminal(last)) return last;
    } catch (err) {
      if (err instanceof CliError && err.status !== undefined && err.status !== 502 && err.status !== 503) throw err;
      lastError = err;
    }
    if (Date.now() - lastContact > windowMs) {
      const why = lastError instanceof Error ? `: ${lastError.message}` : '';
      throw new CliError('CONNECTION_LOST', `lost track of operation ${start.id}${why}; it may still be running: stowctl operation get ${start.id}`, {
        details: { operation_id: start.id },
        cause: lastError,
      });
    }
    await sleep(delay);
    delay = Math.min(delay * 2, 5_000);
  }
}

function parseTaskEvent(data: string, event: string): z.infer<typeof taskEventSchema> {
  let json: unknown;
  try {
    json = JSON.parse(data);
  } catch {
    throw new CliError('BAD_RESPONSE', `the ${event} event is not JSON`);
  }
  const r = taskEventSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new CliError('BAD_RESPONSE', `unexpected ${event} event${issue ? ` at ${issue.path.join('.') || 'top level'}: ${issue.message}` : ''}`);
  }
  return r.data;
}

/** 0 when the operation succeeded and every target has the image; 1 otherwise. */
export function operationExitCode(op: Operation): 0 | 1 {
  if (op.status !== 'succeeded') return 1;
  return op.targets.every((t) => t.status === 'present' || t.status === 'skipped_present') ? 0 : 1;
}
