import { type TaskEvent, taskEventSchema } from '../control/wire.js';
import type { CommandContext } from './context.js';
import { CliError } from './errors.js';
import { writeLine } from './io.js';
import { readSse } from './sse.js';

/**
 * Follows a background task over the control plane's SSE stream (GET /events/background-task?task_id=…)
 * until it ends. On a terminal: one progress bar on stderr, redrawn in place; otherwise one line per
 * update; nothing when the output is for programs.
 */

const TERMINAL = new Set(['bgtask_done', 'bgtask_failed', 'bgtask_cancelled']);
const BAR_WIDTH = 24;

export interface TaskOutcome {
  event: string;
  data: TaskEvent;
}

/** Follows the task's event stream to its end and returns the final event. */
export async function watchTask(ctx: CommandContext, taskId: string): Promise<TaskOutcome> {
  const api = await ctx.api();
  const body = await api.stream(`/events/background-task?task_id=${encodeURIComponent(taskId)}`, 'text/event-stream');
  const mode = ctx.progress;
  const err = ctx.io.stderr;
  let lastLine = '';
  try {
    for await (const ev of readSse(body)) {
      const parsed = taskEventSchema.safeParse(JSON.parse(ev.data));
      if (!parsed.success) throw new CliError('BAD_RESPONSE', `task ${taskId}: unexpected event ${ev.event}`);
      const data = parsed.data;
      if (mode === 'bars') {
        err.write(`\r\x1b[2K${progressLine(data)}`);
      } else if (mode === 'lines') {
        const line = `${taskId}: ${data.current_progress}/${data.total_progress} ${data.message}`;
        if (line !== lastLine) writeLine(err, line);
        lastLine = line;
      }
      if (TERMINAL.has(ev.event)) {
        if (mode === 'bars') err.write('\n');
        return { event: ev.event, data };
      }
    }
  } finally {
    body.destroy();
  }
  throw new CliError('STREAM_ENDED', `the event stream of task ${taskId} ended before the task did`);
}

function progressLine(e: TaskEvent): string {
  const total = e.total_progress;
  const filled = total > 0 ? Math.max(0, Math.min(BAR_WIDTH, Math.round((e.current_progress / total) * BAR_WIDTH))) : 0;
  const bar = '█'.repeat(filled) + '░'.repeat(BAR_WIDTH - filled);
  const message = e.message.length > 60 ? `${e.message.slice(0, 57)}...` : e.message;
  return `${bar} ${e.current_progress}/${total} ${message}`;
}

