import { type ImageReference, parseReference } from '../oci/reference.js';

/**
 * Rule 1 of the /v2/ name rule (see routes.ts): the repository `<name>` normalised as Docker does
 * ("alpine" and "library/alpine" are docker.io/library/alpine); undefined when the name does not parse.
 */
export function normalisedRepo(name: string): ImageReference | undefined {
  try {
    const ref = parseReference(name);
    return ref.tag === undefined && ref.digest === undefined ? ref : undefined;
  } catch {
    return undefined;
  }
}
