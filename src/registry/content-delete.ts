import type { FastifyReply } from 'fastify';
import { type Digest, isDigest } from '../oci/digest.js';
import { isValidTag } from '../oci/reference.js';
import { deleteUnreferenced } from '../store/gc.js';
import type { ContentStoreApi, ImageIndexApi, TagRecord } from '../store/types.js';
import { sendError } from './distribution-errors.js';

/**
 * DELETE on /v2/ (distribution spec, content management):
 *
 *   DELETE /v2/<name>/manifests/<tag>     removes the tag only: 202; 404 when the name has no such tag
 *   DELETE /v2/<name>/manifests/<digest>  removes the image, artifact or index record with every tag and
 *                                         referrer entry it has, then its blobs no other record needs
 *                                         (as docker rmi does): 202, and the manifest is 404 from then on
 *   DELETE /v2/<name>/blobs/<digest>      removes a blob no held manifest needs: 202; 404 when absent;
 *                                         409 DENIED while a held manifest names it (delete that first)
 *
 * Manifests and blobs are content-addressed and shared by every name on this machine, so a delete by
 * digest removes it under every name. Blobs are removed through deleteUnreferenced, which leaves any blob
 * a writer has leased or a record names.
 */

type Handles = { store: ContentStoreApi; images: ImageIndexApi };

export async function deleteManifest(
  reply: FastifyReply,
  { store, images }: Handles,
  name: string,
  ref: string,
  findNameTag: (images: ImageIndexApi, name: string, tag: string) => TagRecord | undefined,
): Promise<FastifyReply> {
  if (!ref.includes(':')) {
    if (!isValidTag(ref)) return sendError(reply, 400, 'TAG_INVALID', `invalid tag "${ref.slice(0, 100)}"`);
    const tag = findNameTag(images, name, ref);
    if (!tag) return sendError(reply, 404, 'MANIFEST_UNKNOWN', `manifest unknown: ${name}:${ref}`, { name, tag: ref });
    images.untag(tag.reference);
    return reply.code(202).header('content-length', '0').send();
  }
  if (!isDigest(ref)) return sendError(reply, 400, 'DIGEST_INVALID', `invalid digest "${ref.slice(0, 100)}"`);
  const digest: Digest = ref;
  const blobs = images.transaction(() => {
    const image = images.getImage(digest);
    if (image) {
      images.deleteImage(digest);
      return [digest, image.configDigest, ...image.layers];
    }
    const artifact = images.getArtifact(digest);
    if (artifact) {
      images.deleteArtifact(digest);
      return [digest, ...artifact.blobs];
    }
    if (images.getIndex(digest)) {
      images.deleteIndex(digest);
      return [digest];
    }
    return undefined;
  });
  if (!blobs) return sendError(reply, 404, 'MANIFEST_UNKNOWN', `manifest unknown: ${name}@${digest}`, { name, digest });
  await deleteUnreferenced(store, images, blobs.map((d) => ({ digest: d })));
  return reply.code(202).header('content-length', '0').send();
}

export async function deleteBlob(reply: FastifyReply, { store, images }: Handles, ref: string): Promise<FastifyReply> {
  if (!isDigest(ref)) return sendError(reply, 400, 'DIGEST_INVALID', `invalid digest "${ref.slice(0, 100)}"`);
  if (!(await store.has(ref))) return sendError(reply, 404, 'BLOB_UNKNOWN', `blob unknown to registry: ${ref}`, { digest: ref });
  const deleted = await deleteUnreferenced(store, images, [{ digest: ref }]);
  if (deleted.length === 0) {
    if (!(await store.has(ref))) return sendError(reply, 404, 'BLOB_UNKNOWN', `blob unknown to registry: ${ref}`, { digest: ref });
    return sendError(reply, 409, 'DENIED', `blob ${ref} is part of a manifest held here (or being written); delete the manifest first`, { digest: ref });
  }
  return reply.code(202).header('content-length', '0').send();
}
