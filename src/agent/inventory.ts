import { type InventoryItem, MAX_LAYERS_PER_IMAGE } from '../control/wire.js';
import type { Digest } from '../oci/digest.js';
import { formatPlatform } from '../oci/platform.js';
import type { ImageIndexApi, ImageRecord } from '../store/types.js';

/**
 * What the control plane knows of this machine: one item per platform image record, keyed by manifest
 * digest, and the difference between two such snapshots (what a delta carries).
 */

export type InventoryMap = Map<Digest, InventoryItem>;

/**
 * One item per image record: its index (when one names it), config, platform, tags and size. With `holds`,
 * only the records it accepts (those the machine's runtime lists); with `layers`, also each image's layer
 * digests (what the control plane needs to tell where a blob is).
 */
export function computeInventory(images: ImageIndexApi, holds?: (record: ImageRecord) => boolean, opts: { layers?: boolean } = {}): InventoryMap {
  const tagsByTarget = new Map<Digest, string[]>();
  for (const t of images.listTags()) {
    const list = tagsByTarget.get(t.target);
    if (list) list.push(t.reference);
    else tagsByTarget.set(t.target, [t.reference]);
  }
  // Every index naming a manifest contributes its tags; the first one (oldest) is the one reported.
  const indexesOf = new Map<Digest, Digest[]>();
  for (const idx of images.listIndexes()) {
    for (const child of idx.children) {
      const list = indexesOf.get(child.digest);
      if (list) list.push(idx.indexDigest);
      else indexesOf.set(child.digest, [idx.indexDigest]);
    }
  }
  const out: InventoryMap = new Map();
  for (const rec of images.listImages()) {
    if (holds && !holds(rec)) continue;
    const indexes = indexesOf.get(rec.manifestDigest) ?? [];
    const references = new Set(tagsByTarget.get(rec.manifestDigest) ?? []);
    for (const idx of indexes) for (const r of tagsByTarget.get(idx) ?? []) references.add(r);
    const item: InventoryItem = {
      digest: rec.manifestDigest,
      config_digest: rec.configDigest,
      platform: formatPlatform(rec.platform),
      references: [...references].sort().slice(0, 1000),
      size_bytes: rec.size,
    };
    if (indexes[0] !== undefined) item.index_digest = indexes[0];
    if (opts.layers) item.layers = rec.layers.slice(0, MAX_LAYERS_PER_IMAGE);
    out.set(rec.manifestDigest, item);
  }
  return out;
}

function sameItem(a: InventoryItem, b: InventoryItem): boolean {
  return (
    a.digest === b.digest &&
    a.index_digest === b.index_digest &&
    a.config_digest === b.config_digest &&
    a.platform === b.platform &&
    a.size_bytes === b.size_bytes &&
    a.layers?.length === b.layers?.length &&
    a.references.length === b.references.length &&
    a.references.every((r, i) => r === b.references[i])
  );
}

export interface InventoryDiff {
  upserted: InventoryItem[];
  removed: Digest[];
}

/** Items new or changed in `next`, and digests gone from it, relative to `base`. */
export function diffInventory(base: ReadonlyMap<Digest, InventoryItem>, next: ReadonlyMap<Digest, InventoryItem>): InventoryDiff {
  const upserted: InventoryItem[] = [];
  const removed: Digest[] = [];
  for (const [digest, item] of next) {
    const old = base.get(digest);
    if (!old || !sameItem(old, item)) upserted.push(item);
  }
  for (const digest of base.keys()) if (!next.has(digest)) removed.push(digest);
  return { upserted, removed };
}
