import { z } from 'zod';
import { StowageError, type ErrorCode } from '../errors.js';
import { isDigest } from './digest.js';
import { MediaType, checkManifestSize } from './media-types.js';

/*
 * Schemas for the four manifest kinds and the image config. Every object is passthrough: unknown fields are
 * kept so that a manifest re-serialised from the parsed value loses nothing.
 */

const digestSchema = z.string().refine(isDigest, { message: 'expected sha256:<64 lowercase hex>' });
const sizeSchema = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const stringMap = z.record(z.string());

export const PlatformSchema = z
  .object({
    os: z.string(),
    architecture: z.string(),
    variant: z.string().optional(),
    'os.version': z.string().optional(),
    'os.features': z.array(z.string()).optional(),
    features: z.array(z.string()).optional(),
  })
  .passthrough();

export const DescriptorSchema = z
  .object({
    mediaType: z.string(),
    digest: digestSchema,
    size: sizeSchema,
    urls: z.array(z.string()).optional(),
    annotations: stringMap.optional(),
    platform: PlatformSchema.optional(),
    artifactType: z.string().optional(),
  })
  .passthrough();
export type Descriptor = z.infer<typeof DescriptorSchema>;

const manifestFields = {
  schemaVersion: z.literal(2),
  config: DescriptorSchema,
  layers: z.array(DescriptorSchema),
  annotations: stringMap.optional(),
};
const indexFields = {
  schemaVersion: z.literal(2),
  manifests: z.array(DescriptorSchema),
  annotations: stringMap.optional(),
};

export const DockerManifestSchema = z
  .object({ ...manifestFields, mediaType: z.literal(MediaType.DockerManifest).optional() })
  .passthrough();
export const OciManifestSchema = z
  .object({
    ...manifestFields,
    mediaType: z.literal(MediaType.OciManifest).optional(),
    artifactType: z.string().optional(),
    subject: DescriptorSchema.optional(),
  })
  .passthrough();
export const DockerManifestListSchema = z
  .object({ ...indexFields, mediaType: z.literal(MediaType.DockerManifestList).optional() })
  .passthrough();
export const OciIndexSchema = z
  .object({
    ...indexFields,
    mediaType: z.literal(MediaType.OciIndex).optional(),
    artifactType: z.string().optional(),
    subject: DescriptorSchema.optional(),
  })
  .passthrough();

export type DockerManifest = z.infer<typeof DockerManifestSchema>;
export type OciManifest = z.infer<typeof OciManifestSchema>;
export type DockerManifestList = z.infer<typeof DockerManifestListSchema>;
export type OciIndex = z.infer<typeof OciIndexSchema>;
/** A single-platform manifest of either flavour. */
export type ImageManifest = DockerManifest | OciManifest;
/** A multi-platform index of either flavour. */
export type ImageIndex = DockerManifestList | OciIndex;

export type ManifestMediaType = typeof MediaType.DockerManifest | typeof MediaType.OciManifest;
export type IndexMediaType = typeof MediaType.DockerManifestList | typeof MediaType.OciIndex;

export type ParsedManifest =
  | { kind: 'manifest'; mediaType: ManifestMediaType; manifest: ImageManifest }
  | { kind: 'index'; mediaType: IndexMediaType; index: ImageIndex };

// Docker writes null for unset config fields, so every field accepts null.
const nullableStrings = z.array(z.string()).nullable().optional();
const emptyObjectMap = z.record(z.object({}).passthrough()).nullable().optional();

export const HealthcheckSchema = z
  .object({
    Test: nullableStrings,
    Interval: z.number().optional(),
    Timeout: z.number().optional(),
    StartPeriod: z.number().optional(),
    StartInterval: z.number().optional(),
    Retries: z.number().optional(),
  })
  .passthrough();

export const ContainerConfigSchema = z
  .object({
    User: z.string().optional(),
    ExposedPorts: emptyObjectMap,
    Env: nullableStrings,
    Entrypoint: nullableStrings,
    Cmd: nullableStrings,
    Volumes: emptyObjectMap,
    WorkingDir: z.string().optional(),
    Labels: stringMap.nullable().optional(),
    StopSignal: z.string().optional(),
    ArgsEscaped: z.boolean().optional(),
    Healthcheck: HealthcheckSchema.nullable().optional(),
    Shell: nullableStrings,
    OnBuild: nullableStrings,
  })
  .passthrough();

export const HistorySchema = z
  .object({
    created: z.string().optional(),
    created_by: z.string().optional(),
    author: z.string().optional(),
    comment: z.string().optional(),
    empty_layer: z.boolean().optional(),
  })
  .passthrough();

export const ImageConfigSchema = z
  .object({
    architecture: z.string(),
    os: z.string(),
    variant: z.string().optional(),
    'os.version': z.string().optional(),
    'os.features': z.array(z.string()).optional(),
    created: z.string().optional(),
    author: z.string().optional(),
    config: ContainerConfigSchema.nullable().optional(),
    rootfs: z.object({ type: z.string(), diff_ids: z.array(digestSchema) }).passthrough(),
    history: z.array(HistorySchema).optional(),
  })
  .passthrough();
export type ImageConfig = z.infer<typeof ImageConfigSchema>;
export type ContainerConfig = z.infer<typeof ContainerConfigSchema>;

const SCHEMA_BY_MEDIA_TYPE = {
  [MediaType.DockerManifest]: { kind: 'manifest', schema: DockerManifestSchema },
  [MediaType.OciManifest]: { kind: 'manifest', schema: OciManifestSchema },
  [MediaType.DockerManifestList]: { kind: 'index', schema: DockerManifestListSchema },
  [MediaType.OciIndex]: { kind: 'index', schema: OciIndexSchema },
} as const;
type KnownMediaType = keyof typeof SCHEMA_BY_MEDIA_TYPE;

function isKnownMediaType(mt: string | undefined): mt is KnownMediaType {
  return mt !== undefined && Object.hasOwn(SCHEMA_BY_MEDIA_TYPE, mt);
}

/** Docker schema1 in all its spellings: recognised so the error says what it is. */
function isSchema1(mt: string | undefined): boolean {
  return mt !== undefined && mt.startsWith('application/vnd.docker.distribution.manifest.v1+');
}

/** "type/subtype; charset=utf-8" -> "type/subtype". */
function bareMediaType(contentType: string | undefined): string | undefined {
  const bare = contentType?.split(';')[0]?.trim().toLowerCase();
  return bare ? bare : undefined;
}

/** Bounded, strict UTF-8 JSON decoding for manifests, configs and archive metadata; `code` for bad bytes. */
export function decodeJson(bytes: Uint8Array, what: string, code: ErrorCode): unknown {
  checkManifestSize(bytes.byteLength, what);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new StowageError(code, `${what} is not valid UTF-8`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new StowageError(code, `${what} is not valid JSON: ${(err as Error).message}`);
  }
}

function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`)
    .join('; ');
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Content-Type first, then the mediaType field, then the shape (manifests[] vs layers[]). */
function detectMediaType(doc: Record<string, unknown>, contentType: string | undefined): KnownMediaType {
  const fromHeader = bareMediaType(contentType);
  const field = typeof doc['mediaType'] === 'string' ? doc['mediaType'] : undefined;
  if (isSchema1(fromHeader) || isSchema1(field) || doc['schemaVersion'] === 1) {
    throw new StowageError('UNSUPPORTED', 'Docker schema1 manifests are not supported');
  }
  if (isKnownMediaType(fromHeader)) {
    if (field !== undefined && field !== fromHeader) {
      throw new StowageError('INVALID_MANIFEST', `invalid manifest: mediaType "${field}" does not match content type "${fromHeader}"`);
    }
    return fromHeader;
  }
  if (field !== undefined) {
    if (isKnownMediaType(field)) return field;
    throw new StowageError('INVALID_MANIFEST', `invalid manifest: unknown mediaType "${field}"`);
  }
  const hasManifests = Array.isArray(doc['manifests']);
  const hasLayers = Array.isArray(doc['layers']);
  // Without a mediaType only OCI is possible: Docker's formats require the field.
  if (hasManifests && !hasLayers) return MediaType.OciIndex;
  if (hasLayers && !hasManifests) return MediaType.OciManifest;
  throw new StowageError('INVALID_MANIFEST', 'invalid manifest: cannot tell a manifest from an index (no mediaType, and not exactly one of layers[] or manifests[])');
}

/**
 * Parses manifest or index bytes as received from a registry or read from the store. Throws TOO_LARGE above
 * MAX_MANIFEST_BYTES, INVALID_MANIFEST for malformed JSON or shape, UNSUPPORTED for schema1.
 */
export function parseManifestBytes(bytes: Uint8Array, contentType?: string): ParsedManifest {
  const doc = decodeJson(bytes, 'manifest', 'INVALID_MANIFEST');
  if (!isPlainObject(doc)) throw new StowageError('INVALID_MANIFEST', 'invalid manifest: expected a JSON object');
  const mediaType = detectMediaType(doc, contentType);
  const { kind, schema } = SCHEMA_BY_MEDIA_TYPE[mediaType];
  const result = schema.safeParse(doc);
  if (!result.success) {
    throw new StowageError('INVALID_MANIFEST', `invalid ${mediaType}: ${describeIssues(result.error)}`);
  }
  // The schemas only check (no transforms), so the document as decoded is the valid value, with its key order.
  if (kind === 'manifest') {
    return { kind, mediaType: mediaType as ManifestMediaType, manifest: doc as ImageManifest };
  }
  return { kind, mediaType: mediaType as IndexMediaType, index: doc as ImageIndex };
}

/** Parses an image config blob (Docker or OCI); bounded like manifests. */
export function parseImageConfig(bytes: Uint8Array): ImageConfig {
  const doc = decodeJson(bytes, 'image config', 'INVALID_MANIFEST');
  const result = ImageConfigSchema.safeParse(doc);
  if (!result.success) {
    throw new StowageError('INVALID_MANIFEST', `invalid image config: ${describeIssues(result.error)}`);
  }
  // Zod reorders keys; the decoded document keeps them as written (and is what was validated).
  return doc as ImageConfig;
}

/** Validates one descriptor (e.g. from an API body). */
export function parseDescriptor(value: unknown): Descriptor {
  const result = DescriptorSchema.safeParse(value);
  if (!result.success) throw new StowageError('INVALID_MANIFEST', `invalid descriptor: ${describeIssues(result.error)}`);
  // A copy with the caller's key order (Docker writes mediaType, size, digest; OCI mediaType, digest, size).
  return { ...(value as Descriptor) };
}

/** The blobs a manifest needs: config first, then layers in order. */
export function manifestBlobs(m: ImageManifest): Descriptor[] {
  return [m.config, ...m.layers];
}

/** Compact JSON, the form Docker and registries emit; the digest is taken over exactly these bytes. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value);
}

/** Builds a Docker schema2 or OCI image manifest from descriptors; serialise with canonicalJson. */
export function buildManifest(opts: {
  config: Descriptor;
  layers: readonly Descriptor[];
  mediaType: ManifestMediaType;
  annotations?: Record<string, string>;
}): ImageManifest {
  if (opts.mediaType !== MediaType.DockerManifest && opts.mediaType !== MediaType.OciManifest) {
    throw new StowageError('INVALID_MANIFEST', `cannot build a manifest of media type "${String(opts.mediaType)}"`);
  }
  if (opts.annotations && opts.mediaType === MediaType.DockerManifest) {
    throw new StowageError('INVALID_MANIFEST', 'Docker schema2 manifests have no annotations');
  }
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: opts.mediaType,
    config: parseDescriptor(opts.config),
    layers: opts.layers.map(parseDescriptor),
  };
  if (opts.annotations) manifest.annotations = opts.annotations;
  return manifest;
}
