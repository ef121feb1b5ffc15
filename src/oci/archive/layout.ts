import { z } from 'zod';
import { StowageError } from '../../errors.js';
import { digestHex, type Digest } from '../digest.js';
import { decodeJson } from '../manifest.js';

/*
 * The metadata files of the two archive formats: `docker save`'s manifest.json (legacy and Docker 25+), and
 * the OCI image layout's oci-layout / index.json (index.json itself is an OCI index: parse it with
 * parseManifestBytes).
 */

export const OCI_LAYOUT_FILE = 'oci-layout';
export const OCI_INDEX_FILE = 'index.json';
export const DOCKER_MANIFEST_FILE = 'manifest.json';
/** Pre-1.10 `docker save` metadata; kept by newer Docker for old loaders, not needed here. */
export const DOCKER_REPOSITORIES_FILE = 'repositories';
export const OCI_LAYOUT_VERSION = '1.0.0';

/** The full image name containerd (and Docker 25+) puts on index.json descriptors: "docker.io/library/alpine:3.19". */
export const ANNOTATION_IMAGE_NAME = 'io.containerd.image.name';
/** OCI's reference name: a bare tag ("3.19") or, as some tools write it, a full reference. */
export const ANNOTATION_REF_NAME = 'org.opencontainers.image.ref.name';

export const DockerSaveEntrySchema = z
  .object({
    Config: z.string().min(1),
    RepoTags: z.array(z.string()).nullable().optional(),
    Layers: z.array(z.string()),
    Parent: z.string().optional(),
    LayerSources: z.record(z.object({}).passthrough()).nullable().optional(),
  })
  .passthrough();
export type DockerSaveEntry = z.infer<typeof DockerSaveEntrySchema>;
export const DockerSaveManifestSchema = z.array(DockerSaveEntrySchema);

/** Parses `docker save`'s manifest.json. INVALID_ARCHIVE when malformed or empty; TOO_LARGE above MAX_MANIFEST_BYTES. */
export function parseDockerSaveManifest(bytes: Uint8Array): DockerSaveEntry[] {
  const doc = decodeJson(bytes, DOCKER_MANIFEST_FILE, 'INVALID_ARCHIVE');
  const result = DockerSaveManifestSchema.safeParse(doc);
  if (!result.success) {
    const issue = result.error.issues[0];
    throw new StowageError('INVALID_ARCHIVE', `invalid ${DOCKER_MANIFEST_FILE}: ${issue ? `${issue.path.join('.') || '(root)'}: ${issue.message}` : 'bad shape'}`);
  }
  if (result.data.length === 0) throw new StowageError('INVALID_ARCHIVE', `${DOCKER_MANIFEST_FILE} lists no images`);
  return doc as DockerSaveEntry[];
}

/** Checks the oci-layout marker file. */
export function parseOciLayoutFile(bytes: Uint8Array): { imageLayoutVersion: string } {
  const doc = decodeJson(bytes, OCI_LAYOUT_FILE, 'INVALID_ARCHIVE');
  const version = (doc as { imageLayoutVersion?: unknown } | null)?.imageLayoutVersion;
  if (typeof version !== 'string') throw new StowageError('INVALID_ARCHIVE', `${OCI_LAYOUT_FILE} has no imageLayoutVersion`);
  if (!version.startsWith('1.')) {
    throw new StowageError('UNSUPPORTED', `OCI image layout version ${version} is not supported (expected ${OCI_LAYOUT_VERSION})`);
  }
  return { imageLayoutVersion: version };
}

export function ociLayoutFileBytes(): Buffer {
  return Buffer.from(JSON.stringify({ imageLayoutVersion: OCI_LAYOUT_VERSION }));
}

/** "blobs/sha256/<hex>": where an OCI layout keeps a blob. */
export function blobPath(digest: Digest): string {
  return `blobs/sha256/${digestHex(digest)}`;
}

/** The digest a blob path names ("blobs/sha256/<hex>"), or undefined when the path is not a blob path. */
export function digestFromBlobPath(path: string): Digest | undefined {
  const m = /^blobs\/sha256\/([a-f0-9]{64})$/.exec(path);
  return m ? `sha256:${m[1]}` : undefined;
}
