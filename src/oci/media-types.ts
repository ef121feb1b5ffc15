import { StowageError } from '../errors.js';

/** Media types of the four manifest kinds, configs and layers. */
export const MediaType = {
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  DockerConfig: 'application/vnd.docker.container.image.v1+json',
  OciConfig: 'application/vnd.oci.image.config.v1+json',
  DockerLayer: 'application/vnd.docker.image.rootfs.diff.tar',
  DockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  DockerForeignLayerGzip: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  OciLayer: 'application/vnd.oci.image.layer.v1.tar',
  OciLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  OciLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  OciLayerNondistributableGzip: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
} as const;
export type MediaTypeValue = (typeof MediaType)[keyof typeof MediaType];

export const MANIFEST_MEDIA_TYPES: readonly string[] = [MediaType.DockerManifest, MediaType.OciManifest];
export const INDEX_MEDIA_TYPES: readonly string[] = [MediaType.DockerManifestList, MediaType.OciIndex];
/** What a client sends in Accept to be able to receive any of the four manifest kinds. */
export const MANIFEST_ACCEPT: string = [...MANIFEST_MEDIA_TYPES, ...INDEX_MEDIA_TYPES].join(', ');

export function isIndexMediaType(mt: string | undefined): boolean {
  return mt !== undefined && INDEX_MEDIA_TYPES.includes(mt);
}

export function isManifestMediaType(mt: string | undefined): boolean {
  return mt !== undefined && MANIFEST_MEDIA_TYPES.includes(mt);
}

export type LayerCompression = 'none' | 'gzip' | 'zstd';

export function layerCompression(mediaType: string): LayerCompression {
  if (mediaType.endsWith('+zstd') || mediaType.endsWith('.zstd')) return 'zstd';
  if (mediaType.endsWith('gzip')) return 'gzip';
  return 'none';
}

/** Manifests, indexes and configs above this size are refused: they are metadata, not data. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/** TOO_LARGE when `what` (a manifest, config or archive metadata file) is more than MAX_MANIFEST_BYTES. */
export function checkManifestSize(size: number, what: string): void {
  if (size > MAX_MANIFEST_BYTES) {
    throw new StowageError('TOO_LARGE', `${what} is ${size} bytes; the limit is ${MAX_MANIFEST_BYTES}`, {
      details: { size, limit: MAX_MANIFEST_BYTES },
    });
  }
}
