import { isDeepStrictEqual } from 'node:util';
import type { Digest } from '../../oci/digest.js';
import type { Descriptor, ImageConfig } from '../../oci/manifest.js';

/**
 * The classic builder's step cache, as dockerd's image cache works: a step is identified by the image it starts
 * from (the parent) and the command recorded in its history (`created_by`, which for COPY/ADD carries the
 * hash of the copied content). A hit reuses the earlier step's layer and its history time, so the step, and
 * the whole build, gets the same image ID again.
 */

/** What a hit gives a step: the time recorded in its history and, for a step with a layer, that layer. */
export interface CachedStep {
  created: string;
  layer?: { descriptor: Descriptor; diffId: Digest } | undefined;
}

/** The local step cache (the build-cache ledger): steps earlier builds on this machine made. */
export interface StepLookup {
  lookup(parent: Digest, createdBy: string): CachedStep | undefined;
}

/** A `--cache-from` image: its config (history, diff IDs) and its manifest's layers. */
export interface CacheSource {
  config: ImageConfig;
  layers: Descriptor[];
}

/**
 * dockerd's isValidParent + isValidConfig for a `--cache-from` image: the parent's history and layers are a
 * prefix of the source's, and the source's next history entry was made by the same command. Gives that
 * entry's time and, when it has a layer, the source's layer at that position.
 */
export function matchCacheSource(source: CacheSource, parent: ImageConfig, createdBy: string): CachedStep | undefined {
  const parentHistory = parent.history ?? [];
  const history = source.config.history ?? [];
  if (parentHistory.length >= history.length) return undefined;
  const parentDiffs = parent.rootfs.diff_ids;
  const diffs = source.config.rootfs.diff_ids;
  if (parentDiffs.length > diffs.length) return undefined;
  for (let i = 0; i < parentHistory.length; i++) if (!isDeepStrictEqual(parentHistory[i], history[i])) return undefined;
  for (let i = 0; i < parentDiffs.length; i++) if (parentDiffs[i] !== diffs[i]) return undefined;
  const next = history[parentHistory.length]!;
  if (next.created_by !== createdBy || next.created === undefined) return undefined;
  if (next.empty_layer) return { created: next.created };
  const index = history.slice(0, parentHistory.length).filter((h) => !h.empty_layer).length;
  const descriptor = source.layers[index];
  const diffId = diffs[index];
  if (!descriptor || !diffId) return undefined;
  return { created: next.created, layer: { descriptor, diffId } };
}
