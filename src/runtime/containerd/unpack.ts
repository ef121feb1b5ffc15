import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { StowageError } from '../../errors.js';
import { type Digest, digestOf } from '../../oci/digest.js';
import { type ImageManifest, parseImageConfig, parseManifestBytes } from '../../oci/manifest.js';
import { MAX_MANIFEST_BYTES } from '../../oci/media-types.js';
import type { ContentStoreApi } from '../../store/types.js';
import { type ContainerdClient, type Descriptor, isGrpcCode } from './client.js';

/**
 * Makes an image whose blobs are all in containerd's content store startable, the way containerd's own
 * client does after a pull: the garbage-collection labels that tie manifest → config and layers (and index →
 * manifests) so the image record keeps them, then every layer unpacked into the snapshotter (Prepare on the
 * parent chain, Diff.Apply, Commit to the chain ID; each applied diff checked against the config's diff_id),
 * and the config labelled with the top snapshot so the snapshots stay too. All of it under the agent's lease,
 * so nothing is collected before the image record exists; the record itself is created by the caller last.
 */

export interface UnpackDeps {
  client: ContainerdClient;
  store: ContentStoreApi;
  snapshotter: string;
  lease: string;
}

/** The chain ID of each layer: the first diff ID, then sha256("<parent chain> <diff id>"). */
export function chainIds(diffIds: readonly Digest[]): Digest[] {
  const out: Digest[] = [];
  for (const d of diffIds) out.push(out.length === 0 ? d : digestOf(`${out[out.length - 1]} ${d}`));
  return out;
}

async function readManifest(store: ContentStoreApi, digest: Digest): Promise<ReturnType<typeof parseManifestBytes>> {
  return parseManifestBytes(await store.readBytes(digest, MAX_MANIFEST_BYTES));
}

/** Labels and unpacks one platform manifest; answers the chain ID of its top layer. */
export async function unpackManifest(deps: UnpackDeps, manifestDigest: Digest): Promise<Digest | undefined> {
  const { client, store, snapshotter } = deps;
  const parsed = await readManifest(store, manifestDigest);
  if (parsed.kind !== 'manifest') throw new StowageError('INVALID_MANIFEST', `${manifestDigest} is not an image manifest`);
  const m: ImageManifest = parsed.manifest;
  const config = parseImageConfig(await store.readBytes(m.config.digest, MAX_MANIFEST_BYTES));
  const diffIds = config.rootfs.diff_ids as Digest[];
  if (diffIds.length !== m.layers.length) {
    throw new StowageError('INVALID_MANIFEST', `manifest ${manifestDigest} has ${m.layers.length} layers but its config lists ${diffIds.length}`);
  }
  const refs: Record<string, string> = { 'containerd.io/gc.ref.content.config': m.config.digest };
  m.layers.forEach((l, i) => (refs[`containerd.io/gc.ref.content.l.${i}`] = l.digest));
  await client.setContentLabels(manifestDigest, refs);

  const chains = chainIds(diffIds);
  let parent = '';
  for (const [i, layer] of m.layers.entries()) {
    const chain = chains[i]!;
    const diffId = diffIds[i]!;
    await client.setContentLabels(layer.digest, { 'containerd.io/uncompressed': diffId });
    if (!(await client.statSnapshot(snapshotter, chain))) await applyLayer(deps, { media_type: layer.mediaType, digest: layer.digest, size: layer.size }, diffId, chain, parent);
    parent = chain;
  }
  const top = chains[chains.length - 1];
  if (top) await client.setContentLabels(m.config.digest, { [`containerd.io/gc.ref.snapshot.${snapshotter}`]: top });
  return top;
}

async function applyLayer(deps: UnpackDeps, layer: Descriptor, diffId: Digest, chain: Digest, parent: string): Promise<void> {
  const { client, snapshotter, lease } = deps;
  const key = `stowage-extract-${randomUUID()} ${chain}`;
  const mounts = await client.prepareSnapshot(snapshotter, key, parent, lease);
  try {
    const applied = await client.applyDiff(layer, mounts, lease);
    if (applied.digest !== diffId) {
      throw new StowageError('DIGEST_MISMATCH', `layer ${layer.digest} unpacks to ${applied.digest}, but the image config says ${diffId}`, {
        details: { digest: layer.digest, expected: diffId, actual: applied.digest },
      });
    }
    try {
      await client.commitSnapshot(snapshotter, chain, key, lease);
    } catch (err) {
      // Another unpack of the same layer got there first: its snapshot is as good as ours.
      if (!isGrpcCode(err, grpc.status.ALREADY_EXISTS)) throw err;
      await client.removeSnapshot(snapshotter, key);
    }
  } catch (err) {
    await client.removeSnapshot(snapshotter, key);
    throw err;
  }
}

/** Labels an index so its image record keeps the child manifests. */
export async function labelIndex(deps: UnpackDeps, indexDigest: Digest): Promise<Digest[]> {
  const parsed = await readManifest(deps.store, indexDigest);
  if (parsed.kind !== 'index') throw new StowageError('INVALID_MANIFEST', `${indexDigest} is not an image index`);
  const refs: Record<string, string> = {};
  parsed.index.manifests.forEach((d, i) => (refs[`containerd.io/gc.ref.content.m.${i}`] = d.digest));
  await deps.client.setContentLabels(indexDigest, refs);
  return parsed.index.manifests.map((d) => d.digest as Digest);
}
