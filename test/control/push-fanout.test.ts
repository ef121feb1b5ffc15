import { describe, expect, it } from 'vitest';
import { StowageError } from '../../src/errors.js';
import type { ControlContext } from '../../src/control/context.js';
import type { MachineRecord } from '../../src/control/machines.js';
import { fanOutWhileUploading } from '../../src/control/operations/push-fanout.js';
import type { PushParams } from '../../src/control/operations/push.js';
import type { TransferRunOptions } from '../../src/control/operations/runner.js';
import { until } from '../harness/cluster.js';

/**
 * The early fan-out of a push, against a control plane whose agents are stand-ins that record what they are
 * told: every target is announced the image and asked for its transfer at once, without waiting for the
 * transfer before it to start (the chain then runs together); a target that refuses the announcement (a
 * containerd store) makes the next one wait as before; every announcement is withdrawn when its target ends.
 */

const UPLOAD = 'm0';

interface Fleet {
  ctx: ControlContext;
  announced: string[];
  withdrawn: string[];
  transfers: Map<string, { opts: TransferRunOptions; end: (status: 'present' | 'failed') => void }>;
}

function fleet(targets: string[], refuses: ReadonlySet<string> = new Set()): Fleet {
  const machine = (id: string): MachineRecord => ({ id, status: 'online', platform: 'linux/amd64' }) as unknown as MachineRecord;
  const announced: string[] = [];
  const withdrawn: string[] = [];
  const transfers: Fleet['transfers'] = new Map();
  const log = { info: () => {}, warn: () => {}, error: () => {}, child: () => log };
  const ctx = {
    config: { peerTokenTtlSeconds: 600 },
    operations: {
      require: async () => ({ targets: [UPLOAD, ...targets].map((machine_id) => ({ machine_id, status: 'pending' })) }),
    },
    machines: {
      get: async (id: string) => machine(id),
      getMany: async (ids: readonly string[]) => ids.map(machine),
      requireOnline: async (id: string) => machine(id),
    },
    runner: {
      logFor: () => log,
      wasResumed: () => false,
      failTarget: async () => {},
      agents: {
        announceIncoming: async (m: MachineRecord) => {
          if (refuses.has(m.id)) throw new StowageError('AGENT_ERROR', 'unsupported', { details: { agent_code: 'UNSUPPORTED' } });
          announced.push(m.id);
        },
        withdrawIncoming: async (m: MachineRecord) => {
          withdrawn.push(m.id);
          return true;
        },
      },
      runTransfer: async (_opId: string, target: MachineRecord, _request: unknown, opts: TransferRunOptions) =>
        await new Promise((resolve) => transfers.set(target.id, { opts, end: (status) => resolve({ status }) })),
    },
  };
  return { ctx: ctx as unknown as ControlContext, announced, withdrawn, transfers };
}

const params: PushParams = {
  digest: `sha256:${'a'.repeat(64)}`,
  reference: 'example.test/app:1',
  platform: 'linux/amd64',
  manifest: '{"schemaVersion":2}',
  upload_machine: UPLOAD,
  upload_deadline: Date.now() + 3_600_000,
  repository: 'app',
};

const FAST = { timeoutMs: 10_000, everyMs: 5 };

describe('the early fan-out of a push', () => {
  it('announces the image to every target and starts every transfer at once, before any of them has started', async () => {
    const targets = Array.from({ length: 8 }, (_, i) => `m${i + 1}`);
    const f = fleet(targets);
    const early = (await fanOutWhileUploading(f.ctx, 'op-1', params))!;
    expect(early).toBeDefined();
    // No transfer has said it started (onStarted): each was asked for anyway.
    await until('every transfer requested', async () => (f.transfers.size === targets.length ? true : undefined), FAST);
    expect(new Set(f.announced)).toEqual(new Set([UPLOAD, ...targets]));
    expect(f.withdrawn).toEqual([]);
    for (const id of targets) f.transfers.get(id)!.end('present');
    await early.done;
    // Each target's announcement ends with its transfer; the upload target's with the push (withdraw()).
    expect(new Set(f.withdrawn)).toEqual(new Set(targets));
    await early.withdraw();
    expect(f.withdrawn).toContain(UPLOAD);
  });

  it('makes the target after one that refused the announcement wait for that one to start, as a chain does', async () => {
    const f = fleet(['m1', 'm2', 'm3'], new Set(['m2']));
    const early = (await fanOutWhileUploading(f.ctx, 'op-2', params))!;
    await until('m1 and m2 asked', async () => (f.transfers.has('m1') && f.transfers.has('m2') ? true : undefined), FAST);
    // m3 would pull from m2, which expects nothing until its transfer has planned.
    await new Promise((r) => setTimeout(r, 50));
    expect(f.transfers.has('m3')).toBe(false);
    f.transfers.get('m2')!.opts.onStarted?.();
    await until('m3 asked', async () => (f.transfers.has('m3') ? true : undefined), FAST);
    for (const id of ['m1', 'm2', 'm3']) f.transfers.get(id)!.end('present');
    await early.done;
    expect(new Set(f.withdrawn)).toEqual(new Set(['m1', 'm3']));
  });
});
