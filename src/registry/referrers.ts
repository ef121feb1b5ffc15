import { MediaType } from '../oci/media-types.js';
import type { ReferrerRecord } from '../store/types.js';

/** One entry of a referrers list: the referring manifest's descriptor, with its artifactType and annotations. */
export interface ReferrerDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

/** The answer of GET /v2/<name>/referrers/<digest>: an OCI image index of the referrers, filtered by artifactType when asked. */
export function referrersIndex(records: readonly ReferrerRecord[], artifactType: string | undefined): { schemaVersion: 2; mediaType: string; manifests: ReferrerDescriptor[] } {
  const manifests = records
    .filter((r) => artifactType === undefined || r.artifactType === artifactType)
    .map((r) => {
      const d: ReferrerDescriptor = { mediaType: r.mediaType, digest: r.digest, size: r.size };
      if (r.artifactType !== undefined) d.artifactType = r.artifactType;
      if (Object.keys(r.annotations).length > 0) d.annotations = r.annotations;
      return d;
    });
  return { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests };
}
