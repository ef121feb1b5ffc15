/**
 * What the catalog derives from an image's labels, Backend.AI style:
 *   ai.backend.resource.min.<slot> / ai.backend.resource.max.<slot>  → resource_limits [{key, min, max}]
 *   ai.backend.accelerators = "cuda,rocm"                              → supported_accelerators
 *   ai.backend.role = SYSTEM (or ai.backend.features containing "operation") → is_operation
 * A slot with only a max gets min "0"; a slot with only a min gets max null (no upper bound).
 */

export interface ResourceLimit {
  key: string;
  min: string;
  max: string | null;
}

const MIN_PREFIX = 'ai.backend.resource.min.';
const MAX_PREFIX = 'ai.backend.resource.max.';
const SLOT_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/i;
const MAX_LIST = 64;

export function resourceLimits(labels: Readonly<Record<string, string>>): ResourceLimit[] {
  const slots = new Map<string, { min?: string; max?: string }>();
  for (const [key, raw] of Object.entries(labels)) {
    const kind = key.startsWith(MIN_PREFIX) ? 'min' : key.startsWith(MAX_PREFIX) ? 'max' : undefined;
    if (!kind) continue;
    const slot = key.slice(MIN_PREFIX.length);
    const value = raw.trim();
    if (!SLOT_RE.test(slot) || value === '' || value.length > 64) continue;
    const entry = slots.get(slot) ?? {};
    entry[kind] = value;
    slots.set(slot, entry);
  }
  return [...slots.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .slice(0, MAX_LIST)
    .map(([key, v]) => ({ key, min: v.min ?? '0', max: v.max ?? null }));
}

export function supportedAccelerators(labels: Readonly<Record<string, string>>): string[] {
  const raw = labels['ai.backend.accelerators'];
  if (!raw) return [];
  const out = raw
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '' && s.length <= 64);
  return [...new Set(out)].slice(0, MAX_LIST);
}

export function isOperationImage(labels: Readonly<Record<string, string>>): boolean {
  if ((labels['ai.backend.role'] ?? '').trim().toUpperCase() === 'SYSTEM') return true;
  const features = (labels['ai.backend.features'] ?? '').split(/[\s,]+/);
  return features.includes('operation');
}
