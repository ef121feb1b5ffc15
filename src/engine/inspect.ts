import { StowageError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { type ImageConfig, parseImageConfig, parseManifestBytes } from '../oci/manifest.js';
import { MAX_MANIFEST_BYTES } from '../oci/media-types.js';
import { familiarString } from '../oci/reference.js';
import type { ContentStoreApi, ImageIndexApi } from '../store/types.js';
import type { LocalImage } from './resolve.js';

/** Docker's shapes for one image: ImageSummary (list), ImageInspect, HistoryResponseItem. */

export async function readConfig(store: ContentStoreApi, id: Digest): Promise<ImageConfig> {
  return parseImageConfig(await store.readBytes(id, MAX_MANIFEST_BYTES));
}

export function repoTags(img: LocalImage): string[] {
  return [...new Set(img.tags.map((t) => familiarString(t.ref)))];
}

export function repoDigests(img: LocalImage): string[] {
  return [...new Set(img.digests.map((d) => familiarString(d.ref)))];
}

/** Unix seconds of an ISO time; 0 when unknown. */
export function unixSeconds(iso: string | undefined): number {
  if (!iso) return 0;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? 0 : Math.floor(t / 1000);
}

/** Docker's Created in inspect: RFC 3339 with nanoseconds as given, or the zero time. */
function createdString(iso: string | undefined): string {
  return iso ?? '0001-01-01T00:00:00Z';
}

/** container.Config as dockerd marshals it (every non-omitempty field present). */
export function containerConfig(c: Record<string, unknown> | null | undefined): Record<string, unknown> {
  const src = c ?? {};
  const out: Record<string, unknown> = {
    Hostname: src['Hostname'] ?? '',
    Domainname: src['Domainname'] ?? '',
    User: src['User'] ?? '',
    AttachStdin: src['AttachStdin'] ?? false,
    AttachStdout: src['AttachStdout'] ?? false,
    AttachStderr: src['AttachStderr'] ?? false,
  };
  if (src['ExposedPorts']) out['ExposedPorts'] = src['ExposedPorts'];
  Object.assign(out, {
    Tty: src['Tty'] ?? false,
    OpenStdin: src['OpenStdin'] ?? false,
    StdinOnce: src['StdinOnce'] ?? false,
    Env: src['Env'] ?? null,
    Cmd: src['Cmd'] ?? null,
  });
  if (src['Healthcheck']) out['Healthcheck'] = src['Healthcheck'];
  if (src['ArgsEscaped']) out['ArgsEscaped'] = src['ArgsEscaped'];
  Object.assign(out, {
    Image: src['Image'] ?? '',
    Volumes: src['Volumes'] ?? null,
    WorkingDir: src['WorkingDir'] ?? '',
    Entrypoint: src['Entrypoint'] ?? null,
  });
  if (src['NetworkDisabled']) out['NetworkDisabled'] = src['NetworkDisabled'];
  if (src['MacAddress']) out['MacAddress'] = src['MacAddress'];
  Object.assign(out, { OnBuild: src['OnBuild'] ?? null, Labels: src['Labels'] ?? null });
  if (src['StopSignal']) out['StopSignal'] = src['StopSignal'];
  if (src['StopTimeout'] !== undefined && src['StopTimeout'] !== null) out['StopTimeout'] = src['StopTimeout'];
  if (src['Shell']) out['Shell'] = src['Shell'];
  return out;
}

/** The image's size as stored: Docker reports layer bytes; this is the blobs of its reported manifest. */
export function imageSize(img: LocalImage): number {
  return img.primary.size;
}

export function lastTagTime(images: ImageIndexApi, img: LocalImage): string {
  let last = '';
  const targets = new Set(img.tags.map((t) => t.target));
  for (const target of targets) {
    for (const t of images.tagsFor(target)) if (t.updatedAt > last) last = t.updatedAt;
  }
  return last || '0001-01-01T00:00:00Z';
}

export function summary(img: LocalImage, opts: { dangling: boolean }): Record<string, unknown> {
  let tags = repoTags(img);
  let digests = repoDigests(img);
  if (opts.dangling && tags.length === 0 && digests.length === 0) {
    tags = ['<none>:<none>'];
    digests = ['<none>@<none>'];
  }
  const size = imageSize(img);
  return {
    Containers: -1,
    Created: unixSeconds(img.primary.created),
    Id: img.id,
    Labels: Object.keys(img.primary.labels ?? {}).length > 0 ? img.primary.labels : null,
    ParentId: '',
    RepoDigests: digests,
    RepoTags: tags,
    SharedSize: -1,
    Size: size,
    VirtualSize: size,
  };
}

export async function inspectImage(store: ContentStoreApi, images: ImageIndexApi, img: LocalImage): Promise<Record<string, unknown>> {
  const config = await readConfig(store, img.id);
  const raw = config as Record<string, unknown>;
  const size = imageSize(img);
  const out: Record<string, unknown> = {
    Id: img.id,
    RepoTags: repoTags(img),
    RepoDigests: repoDigests(img),
    Parent: typeof raw['parent'] === 'string' ? raw['parent'] : '',
    Comment: typeof raw['comment'] === 'string' ? raw['comment'] : '',
    Created: createdString(config.created),
    Container: typeof raw['container'] === 'string' ? raw['container'] : '',
    ContainerConfig: containerConfig(raw['container_config'] as Record<string, unknown> | undefined),
    DockerVersion: typeof raw['docker_version'] === 'string' ? raw['docker_version'] : '',
    Author: config.author ?? '',
    Config: containerConfig(config.config as Record<string, unknown> | null | undefined),
    Architecture: config.architecture,
  };
  // The variant (arm64/v8, arm/v7) from the config, else from the platform the image was recorded for.
  const variant = config.variant ?? img.primary.platform.variant;
  if (variant) out['Variant'] = variant;
  out['Os'] = config.os;
  if (config['os.version']) out['OsVersion'] = config['os.version'];
  Object.assign(out, {
    Size: size,
    VirtualSize: size,
    GraphDriver: {
      Data: { ManifestDigest: img.primary.manifestDigest, MediaType: img.primary.manifestMediaType },
      Name: 'stowage',
    },
    RootFS: { Type: config.rootfs.type, Layers: config.rootfs.diff_ids },
    Metadata: { LastTagTime: lastTagTime(images, img) },
  });
  return out;
}

/**
 * The sizes of the image's layers from its manifest's descriptors: one read instead of a stat per layer
 * blob. Every writer of an image record checks each stored layer has its descriptor's size.
 */
async function layerSizes(store: ContentStoreApi, img: LocalImage): Promise<number[]> {
  const { manifestDigest, manifestMediaType } = img.primary;
  const parsed = parseManifestBytes(await store.readBytes(manifestDigest, MAX_MANIFEST_BYTES), manifestMediaType);
  if (parsed.kind !== 'manifest') throw new StowageError('INVALID_MANIFEST', `image ${img.id} is recorded with ${manifestDigest}, which is not an image manifest`);
  return parsed.manifest.layers.map((d) => d.size);
}

/** GET /images/{name}/history: newest first; layer sizes from the image's manifest. */
export async function imageHistory(store: ContentStoreApi, img: LocalImage): Promise<Array<Record<string, unknown>>> {
  const config = await readConfig(store, img.id);
  const sizes = await layerSizes(store, img);
  let history = config.history ?? [];
  if (history.length === 0) history = config.rootfs.diff_ids.map(() => ({ created: config.created }));
  let layer = 0;
  const items = history.map((h) => {
    let size = 0;
    if (!h.empty_layer) {
      size = sizes[layer] ?? 0;
      layer++;
    }
    return {
      Comment: h.comment ?? '',
      Created: unixSeconds(h.created),
      CreatedBy: h.created_by ?? '',
      Id: '<missing>',
      Size: size,
      Tags: null as string[] | null,
    };
  });
  items.reverse();
  const top = items[0];
  if (top) {
    top.Id = img.id;
    top.Tags = repoTags(img);
  }
  return items;
}
