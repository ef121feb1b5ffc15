import { describe, expect, it } from 'vitest';
import type { Availability, Machine, Operation } from '../../src/control/wire.js';
import { formatAge, formatBytes, formatDuration, formatList, formatRate, formatTable, shortDigest } from '../../src/cli/output.js';
import { renderAvailability, renderMachines, renderResult } from '../../src/cli/render.js';
import { operationExitCode } from '../../src/cli/follow.js';

const D1 = `sha256:${'0123456789ab'.repeat(5)}cdef`;
const NOW = Date.parse('2024-05-01T12:00:00Z');

describe('stowctl output formatting', () => {
  it('aligns table columns without trailing blanks and keeps rows on one line', () => {
    expect(
      formatTable(
        ['A', 'LONGER', 'C'],
        [
          ['xxxx', 'y', ''],
          ['z', 'multi\nline', 'last'],
        ],
      ),
    ).toBe(['A      LONGER       C', 'xxxx   y', 'z      multi line   last'].join('\n'));
  });

  it('formats sizes, rates, durations, ages, digests and lists', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1023)).toBe('1023 B');
    expect(formatBytes(1024)).toBe('1.00 KiB');
    expect(formatBytes(12.34 * 1024 * 1024)).toBe('12.3 MiB');
    expect(formatBytes(300 * 1024 ** 3)).toBe('300 GiB');
    expect(formatBytes(null)).toBe('-');
    expect(formatRate(2 * 1024 * 1024)).toBe('2.00 MiB/s');
    expect(formatRate(0)).toBe('-');
    expect(formatDuration(850)).toBe('850ms');
    expect(formatDuration(4200)).toBe('4.2s');
    expect(formatDuration(185_000)).toBe('3m05s');
    expect(formatDuration(2 * 3600_000 + 60_000)).toBe('2h01m');
    expect(formatAge('2024-05-01T11:59:30Z', NOW)).toBe('30s ago');
    expect(formatAge('2024-05-01T09:00:00Z', NOW)).toBe('3h ago');
    expect(formatAge('not a time', NOW)).toBe('not a time');
    expect(shortDigest(D1)).toBe('0123456789ab');
    expect(formatList(['a', 'b', 'c', 'd', 'e'])).toBe('a,b,c,+2');
    expect(formatList([])).toBe('-');
  });

  it('renders image status with short digests and machine list as aligned tables', () => {
    const rec = (machine: string, presence: Availability['presence'], status: 'online' | 'offline' = 'online'): Availability => ({
      machine_id: machine,
      digest: D1,
      index_digest: null,
      config_digest: null,
      platform: 'linux/amd64',
      references: ['docker.io/library/alpine:3.19'],
      size_bytes: 3 * 1024 * 1024,
      presence,
      machine_status: status,
      updated_at: '2024-05-01T11:55:00Z',
    });
    const out = renderAvailability(
      [rec('m1', { state: 'present' }), rec('machine-2', { state: 'failed', operation_id: 'op-1', failure: { code: 'MACHINE_OFFLINE', message: 'x' } }, 'offline')],
      NOW,
    );
    expect(out.split('\n')).toEqual([
      'MACHINE     DIGEST         PLATFORM      STATE                               SIZE       REFERENCES                      UPDATED',
      'm1          0123456789ab   linux/amd64   present                             3.00 MiB   docker.io/library/alpine:3.19   5m ago',
      'machine-2   0123456789ab   linux/amd64   failed: MACHINE_OFFLINE (offline)   3.00 MiB   docker.io/library/alpine:3.19   5m ago',
    ]);

    const m: Machine = {
      id: 'm1',
      agent_url: 'http://127.0.0.1:5080',
      platform: 'linux/amd64',
      labels: {},
      scaling_group: null,
      status: 'online',
      last_seen_at: '2024-05-01T11:59:59Z',
      joined_at: '2024-05-01T10:00:00Z',
      version: null,
      image_count: 4,
      disk_used_bytes: null,
    };
    expect(renderMachines([m], NOW).split('\n')).toEqual([
      'ID   STATUS   PLATFORM      SCALING-GROUP   IMAGES   LAST-SEEN   AGENT-URL',
      'm1   online   linux/amd64   -               4        just now    http://127.0.0.1:5080',
    ]);
  });

  it('renders the per-target result and exits 0 only when every target has the image', () => {
    const op: Operation = {
      id: 'op-1',
      kind: 'distribute',
      status: 'succeeded',
      stage: 'done',
      actor: 'admin',
      artifact: { digest: D1, reference: null, platform: null, size_bytes: 2048 },
      source_machine: 'm1',
      targets: [
        { machine_id: 'm2', status: 'present', bytes_transferred: 2048, bytes_total: 2048, started_at: null, finished_at: null },
        { machine_id: 'm3', status: 'skipped_present', bytes_transferred: 0, bytes_total: 2048, started_at: null, finished_at: null },
      ],
      progress: { current: 0, total: 0, message: '' },
      created_at: '2024-05-01T11:00:00Z',
      updated_at: '2024-05-01T11:00:00Z',
      finished_at: '2024-05-01T11:00:01Z',
    };
    expect(renderResult(op)).toBe(
      ['Operation op-1 succeeded', 'MACHINE   STATUS            BYTES      ERROR', 'm2        present           2.00 KiB', 'm3        skipped_present   0 B'].join('\n'),
    );
    expect(operationExitCode(op)).toBe(0);
    const failed: Operation = {
      ...op,
      status: 'partially_failed',
      targets: [op.targets[0]!, { ...op.targets[1]!, status: 'failed', bytes_transferred: 10, failure: { code: 'MACHINE_OFFLINE', message: 'm3 is offline', stage: 'connect' } }],
    };
    expect(renderResult(failed).split('\n')[3]).toBe('m3        failed    10 B / 2.00 KiB   MACHINE_OFFLINE: m3 is offline (stage connect)');
    expect(operationExitCode(failed)).toBe(1);
    // A succeeded status with a target left pending is not a success.
    expect(operationExitCode({ ...op, targets: [{ ...op.targets[0]!, status: 'pending' }] })).toBe(1);
  });
});
