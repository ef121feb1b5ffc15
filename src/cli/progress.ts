import cliProgress from 'cli-progress';
import type { Operation, TargetResult } from '../control/wire.js';
import type { PushProgressEvent } from '../registry/push.js';
import type { ProgressMode } from './context.js';
import { type OutStream, writeLine } from './io.js';
import { formatBytes, formatDuration, formatRate } from './output.js';

/**
 * Live progress on stderr: per-target bars on a terminal (cli-progress), plain lines when a target
 * changes status otherwise (logs, CI), nothing with --json (stdout is then one JSON document and
 * stderr stays for errors).
 */

export type { ProgressMode };

/** Bytes per second over the last few seconds of samples. */
export class RateMeter {
  private readonly samples: Array<{ t: number; bytes: number }> = [];
  constructor(private readonly windowMs = 3000) {}

  add(bytes: number, t: number = Date.now()): void {
    this.samples.push({ t, bytes });
    while (this.samples.length > 2 && t - (this.samples[0]?.t ?? t) > this.windowMs) this.samples.shift();
  }

  rate(): number | undefined {
    const a = this.samples[0];
    const b = this.samples[this.samples.length - 1];
    if (!a || !b || b.t <= a.t) return undefined;
    return ((b.bytes - a.bytes) * 1000) / (b.t - a.t);
  }
}

export interface OperationView {
  update(op: Operation): void;
  /** Removes the bars (the final table follows); idempotent. */
  stop(): void;
}

const BAR_WIDTH = 24;

function bar(done: number, total: number | null): string {
  if (!total || total <= 0) return ' '.repeat(BAR_WIDTH);
  const filled = Math.max(0, Math.min(BAR_WIDTH, Math.round((done / total) * BAR_WIDTH)));
  return '█'.repeat(filled) + '░'.repeat(BAR_WIDTH - filled);
}

function bytesOf(t: Pick<TargetResult, 'bytes_transferred' | 'bytes_total'>): string {
  return t.bytes_total !== null ? `${formatBytes(t.bytes_transferred)} / ${formatBytes(t.bytes_total)}` : formatBytes(t.bytes_transferred);
}

interface BarPayload {
  label: string;
  bar: string;
  bytes: string;
  rate: string;
  status: string;
}

function barFormat(_opts: cliProgress.Options, _params: cliProgress.Params, p: BarPayload): string {
  return `${p.label}  ${p.bar}  ${p.bytes}  ${p.rate}  ${p.status}`;
}

class BarsView implements OperationView {
  private readonly multi: cliProgress.MultiBar;
  private readonly bars = new Map<string, { bar: cliProgress.SingleBar; meter: RateMeter }>();
  private width = 0;
  private stopped = false;

  constructor(stream: OutStream) {
    this.multi = new cliProgress.MultiBar(
      { stream: stream as unknown as NodeJS.WritableStream, format: barFormat as unknown as cliProgress.GenericFormatter, hideCursor: true, clearOnComplete: false, fps: 8 },
      cliProgress.Presets.shades_classic,
    );
  }

  update(op: Operation): void {
    if (this.stopped) return;
    this.width = Math.max(this.width, ...op.targets.map((t) => t.machine_id.length));
    for (const t of op.targets) {
      let entry = this.bars.get(t.machine_id);
      if (!entry) {
        entry = { bar: this.multi.create(1, 0, this.payload(t, undefined)), meter: new RateMeter() };
        this.bars.set(t.machine_id, entry);
      }
      entry.meter.add(t.bytes_transferred);
      entry.bar.update(0, this.payload(t, entry.meter.rate()));
    }
  }

  private payload(t: TargetResult, rate: number | undefined): BarPayload {
    const done = t.status === 'present' || t.status === 'skipped_present';
    return {
      label: t.machine_id.padEnd(this.width),
      bar: done && !t.bytes_total ? '█'.repeat(BAR_WIDTH) : bar(t.bytes_transferred, t.bytes_total),
      bytes: bytesOf(t),
      rate: t.status === 'running' ? formatRate(rate) : '',
      status: t.status === 'failed' && t.failure ? `failed: ${t.failure.code}` : t.status,
    };
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.multi.stop();
  }
}

/** One line per target status change (and per stage change of the operation). */
class LinesView implements OperationView {
  private readonly seen = new Map<string, string>();
  private stage: string | undefined;

  constructor(private readonly stream: OutStream) {}

  update(op: Operation): void {
    if (op.stage !== this.stage) {
      this.stage = op.stage;
      writeLine(this.stream, `${op.id}: ${op.status} (${op.stage})`);
    }
    for (const t of op.targets) {
      if (this.seen.get(t.machine_id) === t.status) continue;
      this.seen.set(t.machine_id, t.status);
      writeLine(this.stream, `${op.id}: ${t.machine_id} ${describeTarget(t)}`);
    }
  }

  stop(): void {}
}

/** "present, 12.3 MiB in 4.2s", "failed: CODE message (stage blobs)". */
export function describeTarget(t: TargetResult): string {
  switch (t.status) {
    case 'present': {
      const took = t.started_at && t.finished_at ? ` in ${formatDuration(Date.parse(t.finished_at) - Date.parse(t.started_at))}` : '';
      return `present, ${formatBytes(t.bytes_transferred)} moved${took}`;
    }
    case 'skipped_present':
      return 'skipped_present, already there';
    case 'failed':
      return t.failure ? `failed: ${t.failure.code} ${t.failure.message}${t.failure.stage ? ` (stage ${t.failure.stage})` : ''}` : 'failed';
    default:
      return t.status;
  }
}

export function operationView(mode: ProgressMode, stream: OutStream): OperationView {
  if (mode === 'bars') return new BarsView(stream);
  if (mode === 'lines') return new LinesView(stream);
  return { update() {}, stop() {} };
}

// ---------------------------------------------------------------------------------------------------------
// The upload of `stowctl image push`: one bar for all layers, or a line per layer as it finishes.

export interface UploadView {
  onEvent(e: PushProgressEvent): void;
  /** Bytes of layers actually sent (not those the target already had). */
  bytesSent(): number;
  stop(): void;
}

export function uploadView(mode: ProgressMode, stream: OutStream, label: string): UploadView {
  const layers = new Map<string, { current: number; total: number | undefined; state: PushProgressEvent['status'] }>();
  const meter = new RateMeter();
  let single: cliProgress.SingleBar | undefined;
  const sum = (pick: (l: { current: number; total: number | undefined; state: string }) => number): number =>
    [...layers.values()].reduce((n, l) => n + pick(l), 0);
  const payload = (): BarPayload => {
    const done = sum((l) => l.current);
    const total = sum((l) => l.total ?? 0);
    meter.add(done);
    const finished = [...layers.values()].filter((l) => l.state === 'Pushed' || l.state === 'Layer already exists' || l.state === 'Mounted from').length;
    return {
      label,
      bar: bar(done, total),
      bytes: `${formatBytes(done)} / ${formatBytes(total)}`,
      rate: formatRate(meter.rate()),
      status: `${finished}/${layers.size} layers`,
    };
  };
  if (mode === 'bars') {
    single = new cliProgress.SingleBar({
      stream: stream as unknown as NodeJS.WritableStream,
      format: barFormat as unknown as cliProgress.GenericFormatter,
      hideCursor: true,
      fps: 8,
    });
    single.start(1, 0, payload());
  }
  return {
    onEvent(e) {
      const l = layers.get(e.id) ?? { current: 0, total: undefined, state: e.status };
      l.state = e.status;
      if (e.total !== undefined) l.total = e.total;
      if (e.current !== undefined) l.current = e.current;
      if (e.status === 'Pushed' && l.total !== undefined) l.current = l.total;
      layers.set(e.id, l);
      if (single) single.update(0, payload());
      else if (mode === 'lines' && (e.status === 'Pushed' || e.status === 'Layer already exists' || e.status === 'Mounted from')) {
        const size = l.total !== undefined ? ` (${formatBytes(l.total)})` : '';
        writeLine(stream, `${label}: layer ${e.id} ${e.status === 'Pushed' ? `pushed${size}` : 'already there'}`);
      }
    },
    bytesSent() {
      return [...layers.values()].filter((l) => l.state === 'Pushed').reduce((n, l) => n + (l.total ?? l.current), 0);
    },
    stop() {
      single?.stop();
      single = undefined;
    },
  };
}
