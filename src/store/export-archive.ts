import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { StowageError } from '../errors.js';
import {
  ANNOTATION_IMAGE_NAME,
  ANNOTATION_REF_NAME,
  DOCKER_MANIFEST_FILE,
  OCI_INDEX_FILE,
  OCI_LAYOUT_FILE,
  blobPath,
  ociLayoutFileBytes,
} from '../oci/archive/layout.js';
import type { Digest } from '../oci/digest.js';
import { canonicalJson, parseManifestBytes, type Descriptor } from '../oci/manifest.js';
import { MAX_MANIFEST_BYTES, MediaType } from '../oci/media-types.js';
import { familiarString, formatReference, parseReference, withDefaultTag } from '../oci/reference.js';
import type { ContentStoreApi, ImageIndexApi } from './types.js';

/*
 * Writes images as the archive `docker save` produces since Docker 25: an OCI image layout (oci-layout,
 * index.json, blobs/sha256/…) that is also a legacy docker-save archive (manifest.json pointing into blobs/).
 * Docker, podman and skopeo's docker-archive: and oci-archive: transports all read it. Layers are written
 * as stored, gzip or not: every reader of manifest.json detects the compression.
 */

export interface ExportTarget {
  manifestDigest: Digest;
  /** References to name the image by (any form parseReference accepts); digest references are skipped. */
  references: string[];
}

export interface ExportSource {
  store: ContentStoreApi;
  images: ImageIndexApi;
}

/** Entries are dated like this (the epoch): archives of the same images are byte-identical. */
const ENTRY_MTIME = new Date(0);

interface ExportedImage {
  manifest: Descriptor;
  config: Descriptor;
  layers: Descriptor[];
  /** Normalised tag references and their tag parts. */
  names: Array<{ full: string; familiar: string; tag: string }>;
}

async function loadImage(source: ExportSource, t: ExportTarget): Promise<ExportedImage> {
  const record = source.images.getImage(t.manifestDigest);
  if (!record) throw new StowageError('IMAGE_NOT_FOUND', `no image with manifest ${t.manifestDigest}`, { details: { digest: t.manifestDigest } });
  const bytes = await source.store.readBytes(t.manifestDigest, MAX_MANIFEST_BYTES);
  const parsed = parseManifestBytes(bytes, record.manifestMediaType);
  if (parsed.kind !== 'manifest') {
    throw new StowageError('INVALID_MANIFEST', `${t.manifestDigest} is an index; export its platform images`);
  }
  const names: ExportedImage['names'] = [];
  for (const r of t.references) {
    const ref = withDefaultTag(parseReference(r));
    if (ref.digest !== undefined || ref.tag === undefined) continue;
    const full = formatReference(ref);
    if (!names.some((n) => n.full === full)) names.push({ full, familiar: familiarString(ref), tag: ref.tag });
  }
  return {
    manifest: { mediaType: parsed.mediaType, digest: t.manifestDigest, size: bytes.length },
    config: parsed.manifest.config,
    layers: parsed.manifest.layers,
    names,
  };
}

/** Every blob must be in the store, with the size its descriptor gives. */
async function blobSize(store: ContentStoreApi, d: Descriptor): Promise<number> {
  const info = await store.stat(d.digest as Digest);
  if (!info) throw new StowageError('BLOB_NOT_FOUND', `blob ${d.digest} is not in the store`, { details: { digest: d.digest } });
  if (info.size !== d.size) {
    throw new StowageError('SIZE_MISMATCH', `blob ${d.digest} is ${info.size} bytes in the store, ${d.size} in its manifest`, {
      details: { digest: d.digest, expected: d.size, actual: info.size },
    });
  }
  return info.size;
}

/** The reader went away (a client that disconnected, a runtime that cut the load): nothing more is read. */
function archiveClosed(): StowageError {
  return new StowageError('CANCELLED', 'the archive stream was closed before it was complete');
}

function isDestroyed(stream: unknown): boolean {
  // streamx (tar-stream) says `destroying` from the call on; node streams say `destroyed`.
  const s = stream as { destroyed?: boolean; destroying?: boolean };
  return s.destroyed === true || s.destroying === true;
}

async function writeEntry(pack: tar.Pack, header: Partial<tar.Header> & { name: string }, body: AsyncIterable<Uint8Array> | Buffer): Promise<void> {
  if (isDestroyed(pack)) {
    if (!Buffer.isBuffer(body)) (body as { destroy?: () => void }).destroy?.();
    throw archiveClosed();
  }
  await new Promise<void>((resolve, reject) => {
    if (Buffer.isBuffer(body)) {
      // An entry's failure (the reader went away: ECONNRESET, …) arrives through the callback; the entry
      // also emits it as 'error', which must not go unheard (that would take the process down).
      pack.entry(header, body, (err) => (err ? reject(err) : resolve())).on('error', () => undefined);
      return;
    }
    const entry = pack.entry(header, (err) => (err ? reject(err) : resolve()));
    entry.on('error', () => undefined); // reported through the callback (see above)
    void (async () => {
      try {
        for await (const chunk of body) {
          // Leaving the loop ends `body` (the store's read stream is closed, not left open).
          if (isDestroyed(entry) || isDestroyed(pack)) throw archiveClosed();
          if (!entry.write(chunk)) {
            if (isDestroyed(entry)) throw archiveClosed();
            await new Promise<void>((r) => {
              const done = (): void => {
                entry.off('drain', done);
                entry.off('close', done);
                r();
              };
              entry.on('drain', done);
              entry.on('close', done);
            });
          }
        }
        entry.end(undefined);
      } catch (err) {
        entry.destroy(err as Error);
        reject(err as Error);
      }
    })();
  });
}

/**
 * Streams the images as a Docker 25+ `docker save` archive. The archive holds each blob once. Failures (an
 * image or blob missing from the store, …) surface as an error of the returned stream.
 */
export function exportArchive(targets: ExportTarget[], source: ExportSource): Readable {
  const pack = tar.pack();
  const out = Readable.from(pack as unknown as AsyncIterable<Buffer>, { objectMode: false });

  const produce = async (): Promise<void> => {
    if (targets.length === 0) throw new StowageError('BAD_REQUEST', 'nothing to export');
    const images: ExportedImage[] = [];
    for (const t of targets) {
      const img = await loadImage(source, t);
      const same = images.find((i) => i.manifest.digest === img.manifest.digest);
      if (same) {
        for (const n of img.names) if (!same.names.some((m) => m.full === n.full)) same.names.push(n);
      } else {
        images.push(img);
      }
    }
    // Check everything before the first byte goes out.
    const blobs = new Map<Digest, number>();
    for (const img of images) {
      for (const d of [img.manifest, img.config, ...img.layers]) {
        if (!blobs.has(d.digest as Digest)) blobs.set(d.digest as Digest, await blobSize(source.store, d));
      }
    }

    const dir = (name: string): Promise<void> => writeEntry(pack, { name, type: 'directory', mode: 0o755, mtime: ENTRY_MTIME }, Buffer.alloc(0));
    const file = (name: string, data: Buffer): Promise<void> =>
      writeEntry(pack, { name, type: 'file', mode: 0o644, size: data.length, mtime: ENTRY_MTIME }, data);

    await dir('blobs/');
    await dir('blobs/sha256/');
    for (const [digest, size] of blobs) {
      const rs = await source.store.createReadStream(digest);
      await writeEntry(pack, { name: blobPath(digest), type: 'file', mode: 0o644, size, mtime: ENTRY_MTIME }, rs);
    }

    const index = {
      schemaVersion: 2,
      mediaType: MediaType.OciIndex,
      manifests: images.flatMap((img) => {
        const base = { mediaType: img.manifest.mediaType, digest: img.manifest.digest, size: img.manifest.size };
        if (img.names.length === 0) return [base];
        return img.names.map((n) => ({
          ...base,
          annotations: { [ANNOTATION_IMAGE_NAME]: n.full, [ANNOTATION_REF_NAME]: n.tag },
        }));
      }),
    };
    await file(OCI_INDEX_FILE, Buffer.from(canonicalJson(index)));

    const manifest = images.map((img) => ({
      Config: blobPath(img.config.digest as Digest),
      // null, not [], for an image saved by ID (as dockerd writes it).
      RepoTags: img.names.length > 0 ? img.names.map((n) => n.familiar) : null,
      Layers: img.layers.map((l) => blobPath(l.digest as Digest)),
    }));
    await file(DOCKER_MANIFEST_FILE, Buffer.from(canonicalJson(manifest)));
    await file(OCI_LAYOUT_FILE, ociLayoutFileBytes());
    pack.finalize();
  };

  // A reader that goes away stops the production (its pending entry included).
  out.once('close', () => {
    if (!isDestroyed(pack)) pack.destroy();
  });
  produce().catch((err: unknown) => {
    pack.destroy(err as Error);
    out.destroy(err as Error);
  });
  return out;
}
