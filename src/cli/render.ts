import type { Availability, ImageInspect, Machine, Operation } from '../control/wire.js';
import { formatAge, formatBytes, formatList, formatTable, shortDigest } from './output.js';
import { type ListView, renderList } from './view.js';

/** Human renderings of the control plane's records. `now` is injectable so tests pin the ages. */

const TABLE = { mode: 'table', noTrunc: false, format: undefined } as const;

/** A digest as a table shows it: 12 hex, or whole with --no-trunc. */
export function digestCell(digest: string | null | undefined, o: { noTrunc: boolean }): string {
  if (!digest) return '-';
  return o.noTrunc ? digest : shortDigest(digest);
}

function listCell(items: readonly string[], o: { noTrunc: boolean }): string {
  return o.noTrunc ? (items.length ? items.join(',') : '-') : formatList(items);
}

export function machinesView(machines: readonly Machine[], now = Date.now()): ListView<Machine> {
  return {
    rows: machines,
    empty: 'No machines have joined.',
    columns: [
      { header: 'ID', cell: (m) => m.id },
      { header: 'STATUS', cell: (m) => m.status },
      { header: 'PLATFORM', cell: (m) => m.platform },
      { header: 'SCALING-GROUP', cell: (m) => m.scaling_group ?? '-' },
      { header: 'IMAGES', cell: (m) => String(m.image_count) },
      { header: 'LAST-SEEN', cell: (m) => formatAge(m.last_seen_at, now) },
      { header: 'AGENT-URL', cell: (m) => m.agent_url },
      { header: 'LABELS', cell: (m, o) => listCell(Object.entries(m.labels).map(([k, v]) => `${k}=${v}`), o), wide: true },
      { header: 'VERSION', cell: (m) => m.version ?? '-', wide: true },
      { header: 'JOINED', cell: (m) => formatAge(m.joined_at, now), wide: true },
    ],
  };
}

export function renderMachines(machines: readonly Machine[], now = Date.now()): string {
  return renderList({ machines }, machinesView(machines, now), TABLE);
}

function stateOf(a: Availability): string {
  const p = a.presence;
  let s: string = p.state;
  if (p.state === 'failed') s = `failed: ${p.failure.code}`;
  if (p.state === 'transferring') s = `transferring (${p.operation_id})`;
  return a.machine_status !== 'online' ? `${s} (${a.machine_status})` : s;
}

export function availabilityView(records: readonly Availability[], now = Date.now()): ListView<Availability> {
  return {
    rows: records,
    empty: 'No matching images.',
    columns: [
      { header: 'MACHINE', cell: (r) => r.machine_id },
      { header: 'DIGEST', cell: (r, o) => digestCell(r.digest, o) },
      { header: 'PLATFORM', cell: (r) => r.platform },
      { header: 'STATE', cell: (r) => stateOf(r) },
      { header: 'SIZE', cell: (r) => formatBytes(r.size_bytes) },
      { header: 'REFERENCES', cell: (r, o) => listCell(r.references, o) },
      { header: 'UPDATED', cell: (r) => formatAge(r.updated_at, now) },
      { header: 'IMAGE-ID', cell: (r, o) => digestCell(r.config_digest, o), wide: true },
      { header: 'INDEX', cell: (r, o) => digestCell(r.index_digest, o), wide: true },
    ],
  };
}

export function renderAvailability(records: readonly Availability[], now = Date.now()): string {
  return renderList({ records }, availabilityView(records, now), TABLE);
}

/** One image as `image ls` lists it: a platform manifest and the machines that hold it. */
export interface HeldImage {
  references: string[];
  digest: string;
  index_digest: string | null;
  /** The image ID (config digest). */
  config_digest: string | null;
  platform: string;
  size_bytes: number;
  machines: string[];
}

/** Availability records grouped per platform manifest, present ones only (`image ls`). */
export function heldImages(records: readonly Availability[]): HeldImage[] {
  const by = new Map<string, HeldImage>();
  for (const r of records) {
    if (r.presence.state !== 'present') continue;
    const key = `${r.digest} ${r.platform}`;
    const img = by.get(key) ?? { references: [], digest: r.digest, index_digest: r.index_digest, config_digest: r.config_digest, platform: r.platform, size_bytes: r.size_bytes, machines: [] };
    for (const ref of r.references) if (!img.references.includes(ref)) img.references.push(ref);
    if (!img.machines.includes(r.machine_id)) img.machines.push(r.machine_id);
    by.set(key, img);
  }
  const out = [...by.values()];
  for (const i of out) {
    i.references.sort();
    i.machines.sort();
  }
  return out.sort((a, b) => (a.references[0] ?? '~').localeCompare(b.references[0] ?? '~') || a.digest.localeCompare(b.digest) || a.platform.localeCompare(b.platform));
}

export function heldImagesView(images: readonly HeldImage[]): ListView<HeldImage> {
  return {
    rows: images,
    empty: 'No machine holds an image.',
    columns: [
      { header: 'REFERENCE', cell: (i, o) => listCell(i.references, o) },
      { header: 'DIGEST', cell: (i, o) => digestCell(i.digest, o) },
      { header: 'IMAGE-ID', cell: (i, o) => digestCell(i.config_digest, o) },
      { header: 'PLATFORM', cell: (i) => i.platform },
      { header: 'SIZE', cell: (i) => formatBytes(i.size_bytes) },
      { header: 'MACHINES', cell: (i, o) => listCell(i.machines, o) },
      { header: 'INDEX', cell: (i, o) => digestCell(i.index_digest, o), wide: true },
    ],
  };
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => `  ${l}`)
    .join('\n');
}

export function renderInspect(img: ImageInspect, now = Date.now(), noTrunc = false): string {
  const o = { noTrunc };
  const lines = [
    `Digest:      ${img.digest}`,
    `Kind:        ${img.kind} (${img.media_type})`,
    `References:  ${img.references.length ? img.references.join(', ') : '-'}`,
    `Read from:   ${img.read_from}`,
    '',
    'Platforms:',
    indent(
      formatTable(
        ['PLATFORM', 'DIGEST', 'IMAGE ID', 'SIZE', 'LAYERS', 'CREATED'],
        img.platforms.map((p) => [p.platform, digestCell(p.digest, o), digestCell(p.config_digest, o), formatBytes(p.size_bytes), String(p.layers.length), p.created ?? '-']),
      ),
    ),
  ];
  const labels = img.platforms.flatMap((p) => Object.entries(p.labels).map(([k, v]) => `${k}=${v}`));
  if (labels.length) lines.push('', 'Labels:', ...[...new Set(labels)].map((l) => `  ${l}`));
  lines.push('', 'Availability:', indent(renderList({}, availabilityView(img.availability, now), { ...TABLE, noTrunc })));
  return lines.join('\n');
}

function artifactText(op: Operation): string {
  const a = op.artifact;
  const parts = [a.reference, a.digest, a.platform, a.size_bytes !== null ? formatBytes(a.size_bytes) : null].filter((p): p is string => !!p);
  return parts.length ? parts.join('  ') : '-';
}

export function renderOperation(op: Operation, now = Date.now()): string {
  const lines = [
    `ID:        ${op.id}`,
    `Kind:      ${op.kind}`,
    `Status:    ${op.status} (stage ${op.stage})`,
    `Artifact:  ${artifactText(op)}`,
    `Source:    ${op.source_machine ?? '-'}`,
    `Actor:     ${op.actor}`,
    `Created:   ${op.created_at} (${formatAge(op.created_at, now)})`,
    `Finished:  ${op.finished_at ?? '-'}`,
  ];
  if (op.progress.total > 0 || op.progress.message) lines.push(`Progress:  ${op.progress.current}/${op.progress.total} ${op.progress.message}`.trimEnd());
  if (op.error) lines.push(`Error:     ${op.error.code}: ${op.error.message}${op.error.stage ? ` (stage ${op.error.stage})` : ''}`);
  if (op.targets.length) lines.push('', formatTable(TARGET_HEADERS, targetRows(op)));
  return lines.join('\n');
}

/** The final summary of push / distribute: a status line and the per-target table. */
export function renderResult(op: Operation): string {
  const head = `Operation ${op.id} ${op.status}${op.error ? `: ${op.error.code}: ${op.error.message}` : ''}`;
  return op.targets.length ? `${head}\n${formatTable(TARGET_HEADERS, targetRows(op))}` : head;
}

function targetsCell(op: Operation): string {
  const ok = op.targets.filter((t) => t.status === 'present' || t.status === 'skipped_present').length;
  const failed = op.targets.filter((t) => t.status === 'failed').length;
  return op.targets.length ? `${ok}/${op.targets.length} ok${failed ? `, ${failed} failed` : ''}` : '-';
}

export function operationsView(ops: readonly Operation[], now = Date.now()): ListView<Operation> {
  return {
    rows: ops,
    empty: 'No operations.',
    columns: [
      { header: 'ID', cell: (op) => op.id },
      { header: 'KIND', cell: (op) => op.kind },
      { header: 'STATUS', cell: (op) => op.status },
      { header: 'ARTIFACT', cell: (op, o) => op.artifact.reference ?? digestCell(op.artifact.digest, o) },
      { header: 'TARGETS', cell: (op) => targetsCell(op) },
      { header: 'CREATED', cell: (op) => formatAge(op.created_at, now) },
      { header: 'DIGEST', cell: (op, o) => digestCell(op.artifact.digest, o), wide: true },
      { header: 'SOURCE', cell: (op) => op.source_machine ?? '-', wide: true },
      { header: 'STAGE', cell: (op) => op.stage, wide: true },
      { header: 'ACTOR', cell: (op) => op.actor, wide: true },
    ],
  };
}

export function renderOperationList(ops: readonly Operation[], now = Date.now()): string {
  return renderList({ operations: ops }, operationsView(ops, now), TABLE);
}

/** The rows of the per-target result table. */
export function targetRows(op: Operation): string[][] {
  return op.targets.map((t) => [
    t.machine_id,
    t.status,
    t.bytes_total !== null && t.status !== 'present' && t.status !== 'skipped_present'
      ? `${formatBytes(t.bytes_transferred)} / ${formatBytes(t.bytes_total)}`
      : formatBytes(t.bytes_transferred),
    t.failure ? `${t.failure.code}: ${t.failure.message}${t.failure.stage ? ` (stage ${t.failure.stage})` : ''}` : '',
  ]);
}

export const TARGET_HEADERS = ['MACHINE', 'STATUS', 'BYTES', 'ERROR'] as const;
