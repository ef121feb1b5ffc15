import { type Descriptor, type ManifestMediaType, buildManifest, canonicalJson } from '../oci/manifest.js';
import { MediaType } from '../oci/media-types.js';
import type { Platform } from '../oci/platform.js';
import { type ImageReference, formatReference } from '../oci/reference.js';
import type { ContentStoreApi, ImageIndexApi, ImageRecord, Lease } from '../store/types.js';

/**
 * Images the engine makes itself (import, build): a config and already stored layers become a config blob,
 * a manifest blob and an image record.
 */

export type NewImageRecord = Omit<ImageRecord, 'addedAt'>;

export interface NewImage {
  /** The image config; its `created` and `config.Labels` go into the record. */
  config: { created?: string | undefined; config?: { Labels?: Record<string, string> | null } | null } & Record<string, unknown>;
  /** The layers, already in the store (and held by the lease given to writeImage). */
  layers: readonly Descriptor[];
  /** Docker schema2 (config media type Docker's) or OCI. */
  manifestMediaType: ManifestMediaType;
  platform: Platform;
}

/**
 * Stores the config and the manifest; returns the record that names them (not yet recorded: see recordImage).
 * Both are added to `lease`, which the caller holds, with the layers, until the record is written.
 */
export async function writeImage(store: ContentStoreApi, image: NewImage, lease: Lease): Promise<NewImageRecord> {
  const oci = image.manifestMediaType === MediaType.OciManifest;
  const cfg = await store.putBytes(Buffer.from(canonicalJson(image.config)), undefined, { lease });
  const manifest = buildManifest({
    mediaType: image.manifestMediaType,
    config: { mediaType: oci ? MediaType.OciConfig : MediaType.DockerConfig, digest: cfg.digest, size: cfg.size },
    layers: image.layers,
  });
  const man = await store.putBytes(Buffer.from(canonicalJson(manifest)), undefined, { lease });
  return {
    manifestDigest: man.digest,
    manifestMediaType: image.manifestMediaType,
    configDigest: cfg.digest,
    platform: image.platform,
    layers: image.layers.map((l) => l.digest),
    size: man.size + cfg.size + image.layers.reduce((n, l) => n + l.size, 0),
    created: image.config.created,
    labels: image.config.config?.Labels ?? {},
  };
}

/** Records the image and its tags in one transaction: they appear together or not at all. */
export function recordImage(images: ImageIndexApi, record: NewImageRecord, tags: readonly ImageReference[]): void {
  images.transaction(() => {
    images.putImage(record);
    for (const tag of tags) images.tag(formatReference(tag), record.manifestDigest);
  });
}
