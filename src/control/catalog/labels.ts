/**
 * What the catalog derives from an image's labels, Backend.AI style:
 *   ai.backend.resource.min.<slot> / ai.backend.resource.max.<slot>  → resource_limits [{key, min, max}]
 *   ai.backend.accelerators = "cuda,rocm"                              → supported_accelerators
 *   ai.backend.role = SYSTEM (or ai.backend.features containing "operation") → is_operation
 * A slot with only a max gets min "0"; a slot with only a min gets max null (no upper bound). Like
 * Backend.AI 23.09, cpu and mem default to min "1" and "1g" when the labels name no minimum for them.
 * Only images with an integer `ai.backend.kernelspec` label are Backend.AI images (hasKernelspec);
 * rescans skip the others, as 23.09 does.
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
const DEFAULT_MINIMUMS: Readonly<Record<string, string>> = { cpu: '1', mem: '1g' };

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
  for (const [slot, min] of Object.entries(DEFAULT_MINIMUMS)) {
    const entry = slots.get(slot) ?? {};
    entry.min ??= min;
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

/** A Backend.AI kernel image: `ai.backend.kernelspec` is a positive integer. */
export function hasKernelspec(labels: Readonly<Record<string, string>>): boolean {
  const raw = labels['ai.backend.kernelspec']?.trim() ?? '';
  return /^[0-9]{1,6}$/.test(raw) && Number(raw) >= 1;
}
