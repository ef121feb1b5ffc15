import type { Availability, ImageInspect, Machine, Operation } from '../control/wire.js';
import { TARGET_HEADERS, targetRows } from './follow.js';
import { formatAge, formatBytes, formatList, formatTable, shortDigest } from './output.js';

/** Human renderings of the control plane's records. `now` is injectable so tests pin the ages. */

export function renderMachines(machines: readonly Machine[], now = Date.now()): string {
  if (machines.length === 0) return 'No machines have joined.';
  return formatTable(
    ['ID', 'STATUS', 'PLATFORM', 'SCALING-GROUP', 'IMAGES', 'LAST-SEEN', 'AGENT-URL'],
    machines.map((m) => [m.id, m.status, m.platform, m.scaling_group ?? '-', String(m.image_count), formatAge(m.last_seen_at, now), m.agent_url]),
  );
}

function stateOf(a: Availability): string {
  const p = a.presence;
  let s: string = p.state;
  if (p.state === 'failed') s = `failed: ${p.failure.code}`;
  if (p.state === 'transferring') s = `transferring (${p.operation_id})`;
  return a.machine_status === 'offline' ? `${s} (offline)` : s;
}

export function renderAvailability(records: readonly Availability[], now = Date.now()): string {
  if (records.length === 0) return 'No matching images.';
  return formatTable(
    ['MACHINE', 'DIGEST', 'PLATFORM', 'STATE', 'SIZE', 'REFERENCES', 'UPDATED'],
    records.map((r) => [r.machine_id, shortDigest(r.digest), r.platform, stateOf(r), formatBytes(r.size_bytes), formatList(r.references), formatAge(r.updated_at, now)]),
  );
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => `  ${l}`)
    .join('\n');
}

export function renderInspect(img: ImageInspect, now = Date.now()): string {
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
        img.platforms.map((p) => [p.platform, shortDigest(p.digest), shortDigest(p.config_digest), formatBytes(p.size_bytes), String(p.layers.length), p.created ?? '-']),
      ),
    ),
  ];
  const labels = img.platforms.flatMap((p) => Object.entries(p.labels).map(([k, v]) => `${k}=${v}`));
  if (labels.length) lines.push('', 'Labels:', ...[...new Set(labels)].map((l) => `  ${l}`));
  lines.push('', 'Availability:', indent(renderAvailability(img.availability, now)));
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

export function renderOperationList(ops: readonly Operation[], now = Date.now()): string {
  if (ops.length === 0) return 'No operations.';
  return formatTable(
    ['ID', 'KIND', 'STATUS', 'ARTIFACT', 'TARGETS', 'CREATED'],
    ops.map((op) => {
      const ok = op.targets.filter((t) => t.status === 'present' || t.status === 'skipped_present').length;
      const failed = op.targets.filter((t) => t.status === 'failed').length;
      const targets = op.targets.length ? `${ok}/${op.targets.length} ok${failed ? `, ${failed} failed` : ''}` : '-';
      const artifact = op.artifact.reference ?? (op.artifact.digest ? shortDigest(op.artifact.digest) : '-');
      return [op.id, op.kind, op.status, artifact, targets, formatAge(op.created_at, now)];
    }),
  );
}
