import { describe, expect, it } from 'vitest';
import type { Availability } from '../../src/control/wire.js';
import { CliError } from '../../src/cli/errors.js';
import { resolveFromRecords } from '../../src/cli/resolve.js';
import { parseTemplate } from '../../src/cli/template.js';
import { renderList, viewOptions } from '../../src/cli/view.js';
import { availabilityView } from '../../src/cli/render.js';
import { toYaml } from '../../src/cli/yaml.js';

/** The output modes (-o, --format, --no-trunc) and docker-style image naming, on fixed records. */

const d = (c: string): string => `sha256:${c.repeat(64)}`;
const NOW = Date.parse('2026-01-01T00:00:10Z');

function record(machine: string, digest: string, over: Partial<Availability> = {}): Availability {
  return {
    machine_id: machine,
    digest,
    index_digest: null,
    config_digest: d('c'),
    platform: 'linux/amd64',
    references: ['docker.io/library/myapp:1.0'],
    size_bytes: 2048,
    presence: { state: 'present' },
    machine_status: 'online',
    updated_at: '2026-01-01T00:00:00Z',
    ...over,
  } as Availability;
}

describe('--format templates', () => {
  it('reads fields by JSON key or docker-style name, with json, join, upper and pipelines', () => {
    const row = record('agent-1', d('a'));
    expect(parseTemplate('{{.MachineID}} {{.Digest}}').render(row)).toBe(`agent-1 ${d('a')}`);
    expect(parseTemplate('{{.machine_id}}\\t{{.Presence.State | upper}}').render(row)).toBe('agent-1\tPRESENT');
    expect(parseTemplate('{{join .References ","}}|{{len .References}}').render(row)).toBe('docker.io/library/myapp:1.0|1');
    expect(JSON.parse(parseTemplate('{{json .Presence}}').render(row))).toEqual({ state: 'present' });
    expect(parseTemplate('{{.ConfigDigest | truncate 19}}').render(row)).toBe('sha256:cccccccccccc');
  });

  it('refuses an unknown field or function with a usage error naming what exists', () => {
    const row = record('agent-1', d('a'));
    const err = (() => {
      try {
        parseTemplate('{{.Nope}}').render(row);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(2);
    expect((err as CliError).message).toContain('no field "Nope"');
    expect((err as CliError).message).toContain('machine_id');
    expect(() => parseTemplate('{{frobnicate .Digest}}')).toThrow(/unknown function "frobnicate"/);
    expect(() => parseTemplate('{{.Digest')).toThrow(/without "}}"/);
  });

  it('prints a table with headers and per-row lines, json and yaml of the whole answer', () => {
    const rows = [record('agent-1', d('a')), record('agent-2', d('a'), { references: [] })];
    const view = availabilityView(rows, NOW);
    const table = renderList({ records: rows }, view, viewOptions({ format: 'table {{.MachineID}}\\t{{.Platform}}' }));
    expect(table.split('\n')).toEqual(['MACHINE ID   PLATFORM', 'agent-1      linux/amd64', 'agent-2      linux/amd64']);
    expect(renderList({ records: rows }, view, viewOptions({ format: '{{.MachineID}}' }))).toBe('agent-1\nagent-2');
    expect(JSON.parse(renderList({ records: rows }, view, viewOptions({ output: 'json' })))).toEqual({ records: rows });
    const yaml = renderList({ records: rows }, view, viewOptions({ output: 'yaml' }));
    // kubectl's layout: list items at their key's indent.
    expect(yaml).toContain(`records:\n- machine_id: agent-1\n  digest: ${d('a')}`);
    expect(yaml).toContain('\n  references: []');
    expect(yaml).toContain('\n  presence:\n    state: present');
  });

  it('shortens digests unless --no-trunc, and -o wide adds columns', () => {
    const rows = [record('agent-1', d('a'))];
    const view = availabilityView(rows, NOW);
    const short = renderList({}, view, viewOptions({}));
    expect(short).toContain('aaaaaaaaaaaa ');
    expect(short).not.toContain(d('a'));
    expect(short).not.toContain('IMAGE-ID');
    expect(renderList({}, view, viewOptions({ trunc: false }))).toContain(d('a'));
    expect(renderList({}, view, viewOptions({ output: 'wide' })).split('\n')[0]).toMatch(/UPDATED\s+IMAGE-ID\s+INDEX$/);
  });

  it('refuses an unknown -o and contradicting flags', () => {
    expect(() => viewOptions({ output: 'xml' })).toThrow(/-o "xml" is not one of table, wide, json, yaml/);
    expect(() => viewOptions({ json: true, output: 'yaml' })).toThrow(/disagree/);
    expect(() => viewOptions({ output: 'json', format: '{{.ID}}' })).toThrow(/disagree/);
  });

  it('writes YAML that quotes what would read as something else', () => {
    expect(toYaml({ a: 'true', b: '12', c: 'x: y', d: null, e: 3, f: [] })).toBe('a: "true"\nb: "12"\nc: "x: y"\nd: null\ne: 3\nf: []');
  });
});

describe('image names as docker takes them', () => {
  const amd = record('agent-1', d('a'), { index_digest: d('f'), config_digest: d('1') });
  const arm = record('agent-1', d('b'), { index_digest: d('f'), config_digest: d('2'), platform: 'linux/arm64' });
  const other = record('agent-2', d('e'), { references: ['docker.io/library/other:2'], config_digest: d('3') });

  it('resolves a short reference, a full or short digest and an image ID', () => {
    const all = [amd, arm, other];
    expect(resolveFromRecords('myapp:1.0', all, 'x').digest).toBe(d('f'));
    expect(resolveFromRecords('docker.io/library/other:2', all, 'x').digest).toBe(d('e'));
    expect(resolveFromRecords('eeeeeeeeeeee', all, 'x').digest).toBe(d('e'));
    expect(resolveFromRecords(`sha256:${'b'.repeat(12)}`, all, 'x').digest).toBe(d('f'));
    expect(resolveFromRecords(d('3'), all, 'x').digest).toBe(d('e'));
    expect(resolveFromRecords('333333', all, 'x').digest).toBe(d('e'));
  });

  it('says which images an ambiguous name could be, and what a missing one was read as', () => {
    const clash = record('agent-2', d('a').replace(/a{4}$/, '0000'), { config_digest: d('4') });
    const err = (() => {
      try {
        resolveFromRecords('aaaa', [amd, clash], 'no machine');
      } catch (e) {
        return e as CliError;
      }
    })()!;
    expect(err.code).toBe('AMBIGUOUS_IMAGE');
    expect(err.exitCode).toBe(2);
    expect(err.message).toContain('names 2 different images');
    expect(err.message).toContain('ffffffffffff  docker.io/library/myapp:1.0  on agent-1');
    expect(err.message).toContain('aaaaaaaaaaaa  docker.io/library/myapp:1.0  on agent-2');

    const missing = (() => {
      try {
        resolveFromRecords('nothere:1', [amd], 'agent-1');
      } catch (e) {
        return e as CliError;
      }
    })()!;
    expect(missing.code).toBe('IMAGE_NOT_FOUND');
    expect(missing.message).toContain('agent-1 holds no image named nothere:1 (docker.io/library/nothere:1)');
  });
});
