import { type Descriptor, type ManifestMediaType, buildManifest, canonicalJson } from '../oci/manifest.js';
import { MediaType } from '../oci/media-types.js';
import type { Platform } from '../oci/platform.js';
import { type ImageReference, formatReference } from '../oci/reference.js';
import type { ContentStoreApi, ImageIndexApi, ImageRecord } from '../store/types.js';

/**
 * Images the engine makes itself (import, build): a config and already stored layers become a config blob,
 * a manifest blob and an image record.
 */

export type NewImageRecord = Omit<ImageRecord, 'addedAt'>;

export interface NewImage {
  /** The image config; its `created` and `config.Labels` go into the record. */
  config: { created?: string | undefined; config?: { Labels?: Record<string, string> | null } | null } & Record<string, unknown>;
  /** The layers, already in the store. */
  layers: readonly Descriptor[];
  /** Docker schema2 (config media type Docker's) or OCI. */
  manifestMediaType: ManifestMediaType;
  platform: Platform;
}

/** Stores the config and the manifest; returns the record that names them (not yet recorded: see recordImage). */
export async function writeImage(store: ContentStoreApi, image: NewImage): Promise<NewImageRecord> {
  const oci = image.manifestMediaType === MediaType.OciManifest;
  const cfg = await store.putBytes(Buffer.from(canonicalJson(image.config)));
  const manifest = buildManifest({
    mediaType: image.manifestMediaType,
    config: { mediaType: oci ? MediaType.OciConfig : MediaType.DockerConfig, digest: cfg.digest, size: cfg.size },
    layers: image.layers,
  });
  const man = await store.putBytes(Buffer.from(canonicalJson(manifest)));
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
