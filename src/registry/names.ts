import { NAME_TOTAL_LENGTH_MAX } from '../oci/reference.js';

/**
 * The distribution API's repository-name grammar, shared by the client (what it asks for) and the /v2/
 * routes (what they accept). Names here are registry-relative paths ("library/alpine"), with no host and
 * no Docker Hub normalisation. (Tags: isValidTag in oci/reference.ts.)
 */

/** A path component `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`, then more of them after '/'. */
export const REPOSITORY_PATH_RE = /^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)*$/;

export function isRepositoryPath(name: string): boolean {
  return name.length <= NAME_TOTAL_LENGTH_MAX && REPOSITORY_PATH_RE.test(name);
}
