import { StowageError } from '../errors.js';
import { parseDigest, type Digest } from './digest.js';

/**
 * Image references, parsed and normalised as Docker's distribution/reference ParseNormalizedNamed does:
 * "alpine" is docker.io/library/alpine, "user/app:1" is docker.io/user/app:1.
 */
export interface ImageReference {
  /** Registry host[:port], "docker.io" for Docker Hub. */
  domain: string;
  /** Repository path inside the registry, "library/alpine". */
  path: string;
  tag?: string;
  digest?: Digest;
}

export const DEFAULT_DOMAIN = 'docker.io';
const LEGACY_DEFAULT_DOMAIN = 'index.docker.io';
const OFFICIAL_REPO_PREFIX = 'library/';
export const DEFAULT_TAG = 'latest';
/** distribution's NameTotalLengthMax: domain + "/" + path. */
export const NAME_TOTAL_LENGTH_MAX = 255;

// The distribution/reference grammar.
const ALNUM = '[a-z0-9]+';
const SEPARATOR = '(?:[._]|__|[-]+)';
const PATH_COMPONENT = `${ALNUM}(?:${SEPARATOR}${ALNUM})*`;
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN_NAME = `${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*`;
const IPV6 = '\\[(?:[a-fA-F0-9:]+)\\]';
const DOMAIN = `(?:${DOMAIN_NAME}|${IPV6})(?::[0-9]+)?`;

const DOMAIN_RE = new RegExp(`^${DOMAIN}$`);
const PATH_RE = new RegExp(`^${PATH_COMPONENT}(?:/${PATH_COMPONENT})*$`);
const TAG_RE = /^[\w][\w.-]{0,127}$/;
/** Docker refuses a bare 64-hex name: it would be confused with an image ID. */
const IDENTIFIER_RE = /^[a-f0-9]{64}$/;
const IMAGE_ID_PREFIX_RE = /^(?:sha256:)?[a-f0-9]{1,64}$/;

function invalid(detail?: string): StowageError {
  return new StowageError('INVALID_REFERENCE', detail ? `invalid reference format: ${detail}` : 'invalid reference format');
}

/** distribution's splitDockerDomain: the first component is a registry only if it looks like a host. */
function splitDockerDomain(name: string): { domain: string; remainder: string } {
  const slash = name.indexOf('/');
  let domain: string;
  let remainder: string;
  const first = slash === -1 ? '' : name.slice(0, slash);
  if (slash === -1 || (!/[.:]/.test(first) && first !== 'localhost' && first.toLowerCase() === first)) {
    domain = DEFAULT_DOMAIN;
    remainder = name;
  } else {
    domain = first;
    remainder = name.slice(slash + 1);
  }
  if (domain === LEGACY_DEFAULT_DOMAIN) domain = DEFAULT_DOMAIN;
  if (domain === DEFAULT_DOMAIN && !remainder.includes('/')) remainder = OFFICIAL_REPO_PREFIX + remainder;
  return { domain, remainder };
}

/** Validates a normalised domain + path; messages follow Docker's. */
function checkName(domain: string, path: string): void {
  if (path === '') throw invalid();
  if (path.toLowerCase() !== path) throw invalid(`repository name (${path}) must be lowercase`);
  if (!DOMAIN_RE.test(domain) || !PATH_RE.test(path)) throw invalid();
  if (domain.length + 1 + path.length > NAME_TOTAL_LENGTH_MAX) {
    throw invalid(`repository name must not be more than ${NAME_TOTAL_LENGTH_MAX} characters`);
  }
}

/** Parses "[domain/]path[:tag][@digest]" and normalises it. Throws INVALID_REFERENCE. */
export function parseReference(input: string): ImageReference {
  if (typeof input !== 'string' || input === '') throw invalid('repository name must have at least one component');
  if (IDENTIFIER_RE.test(input)) {
    throw invalid(`invalid repository name (${input}), cannot specify 64-byte hexadecimal strings`);
  }

  const { domain, remainder } = splitDockerDomain(input);

  let rest = remainder;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    const rawDigest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    try {
      digest = parseDigest(rawDigest);
    } catch {
      throw invalid(`invalid digest "${rawDigest}"`);
    }
  }

  let tag: string | undefined;
  // The path has no ':' (the domain was split off already), so the first ':' starts the tag.
  const colon = rest.indexOf(':');
  let path = rest;
  if (colon !== -1) {
    tag = rest.slice(colon + 1);
    path = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) throw invalid(`invalid tag "${tag}"`);
  }

  checkName(domain, path);

  const ref: ImageReference = { domain, path };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

/**
 * Parses a repository name alone (no tag, no digest), e.g. from a query parameter, normalised:
 * "alpine" -> docker.io/library/alpine.
 */
export function parseRepositoryName(name: string): ImageReference {
  const ref = parseReference(name);
  if (ref.tag !== undefined || ref.digest !== undefined) {
    throw invalid(`"${name}" must be a repository name without tag or digest`);
  }
  return ref;
}

/** Is `tag` a valid tag, `[\w][\w.-]{0,127}`? */
export function isValidTag(tag: string): boolean {
  return TAG_RE.test(tag);
}

/** Non-throwing check. */
export function isValidReference(input: string): boolean {
  try {
    parseReference(input);
    return true;
  } catch {
    return false;
  }
}

/** "docker.io/library/alpine". */
export function repository(ref: ImageReference): string {
  return `${ref.domain}/${ref.path}`;
}

/** The fully normalised string: "docker.io/library/alpine:latest", "host:5000/a/b@sha256:…", "x:1@sha256:…". */
export function formatReference(ref: ImageReference): string {
  return withTagAndDigest(repository(ref), ref);
}

/** `name` followed by the reference's ":tag" and "@digest", when it has them. */
function withTagAndDigest(name: string, ref: ImageReference): string {
  let out = name;
  if (ref.tag !== undefined) out += `:${ref.tag}`;
  if (ref.digest !== undefined) out += `@${ref.digest}`;
  return out;
}

/** Docker's FamiliarName: docker.io and a single-level library/ dropped ("alpine", "user/app", "localhost:5000/x"). */
export function familiarName(ref: ImageReference): string {
  if (ref.domain !== DEFAULT_DOMAIN) return repository(ref);
  if (ref.path.startsWith(OFFICIAL_REPO_PREFIX)) {
    const rest = ref.path.slice(OFFICIAL_REPO_PREFIX.length);
    // library/a/b stays as is: "a/b" would parse back to docker.io/a/b.
    if (!rest.includes('/')) return rest;
  }
  return ref.path;
}

/** Docker's FamiliarString: "alpine:latest", "user/app:1", "localhost:5000/x:1@sha256:…". */
export function familiarString(ref: ImageReference): string {
  return withTagAndDigest(familiarName(ref), ref);
}

/**
 * distribution's WithTag: the repository of `ref` with `tag` (any tag or digest of `ref` dropped). A tag that
 * is not `[\w][\w.-]{0,127}` is INVALID_REFERENCE "invalid tag format", as Docker words it.
 */
export function withTag(ref: ImageReference, tag: string): ImageReference {
  if (!isValidTag(tag)) throw new StowageError('INVALID_REFERENCE', 'invalid tag format');
  return { domain: ref.domain, path: ref.path, tag };
}

/** Docker's TagNameOnly: adds "latest" when the reference has neither tag nor digest. */
export function withDefaultTag(ref: ImageReference): ImageReference {
  if (ref.tag !== undefined || ref.digest !== undefined) return ref;
  return { ...ref, tag: DEFAULT_TAG };
}

/** Parses and returns the fully normalised string, with "latest" added when neither tag nor digest is given. */
export function normalizeReference(input: string): string {
  return formatReference(withDefaultTag(parseReference(input)));
}

/**
 * Could `s` name an image by ID: "sha256:<hex>", "<64 hex>" or a shorter hex prefix of either, as Docker
 * accepts? Some strings ("abc") are also valid names; Docker tries the reference first, then the ID.
 */
export function isImageIdLike(s: string): boolean {
  return IMAGE_ID_PREFIX_RE.test(s);
}
