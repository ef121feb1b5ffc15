import type { TransferRequest, TransferSource } from '../control/wire.js';
import { StowageError } from '../errors.js';
import { type Digest, isDigest } from '../oci/digest.js';
import { type Platform, formatPlatform, parsePlatform } from '../oci/platform.js';
import { type ImageReference, formatReference, isValidTag, parseReference } from '../oci/reference.js';
import { isRepositoryPath } from '../registry/names.js';

/** A registry or peer agent to read from: host, scheme, credentials and the repository path to ask under. */
export interface SourcePlan {
  /** Registry host[:port] taken from registry_url. */
  host: string;
  insecure: boolean;
  /** The URL said https:// (a cluster member serving TLS is reached over https even on loopback). */
  https: boolean;
  credentials: { username: string; password: string } | undefined;
  repository: string;
}

/** A transfer request checked and normalised: everything a transfer needs, nothing it must still doubt. */
export interface TransferPlan extends SourcePlan {
  /** The control plane's operation that asked for it (named on every log line of its work). */
  operationId: string;
  /** Identifies the transfer: requests with the same key share one. */
  key: string;
  /** Machines to take blobs from before the source, nearest first (see TransferRequest.peers). */
  peers: SourcePlan[];
  /** The image on the source, by digest or by tag. */
  source: ImageReference;
  digest: Digest | undefined;
  platform: Platform | undefined;
  /** Normalised tags to record locally. */
  references: string[];
}

function bad(code: 'BAD_REQUEST' | 'INVALID_REFERENCE', message: string): StowageError {
  return new StowageError(code, message);
}

/** Normalised tag references ("alpine:3" → "docker.io/library/alpine:3"); a digest or a bare name is refused. */
export function normaliseReferences(refs: readonly string[]): string[] {
  return refs.map((r) => {
    let parsed: ImageReference;
    try {
      parsed = parseReference(r);
    } catch (err) {
      throw bad('INVALID_REFERENCE', `references: ${(err as Error).message}`);
    }
    if (parsed.tag === undefined || parsed.digest !== undefined) throw bad('INVALID_REFERENCE', `references: "${r}" must be a tag reference (name:tag)`);
    return formatReference(parsed);
  });
}

/** Checks one source (or peer) of a request; `field` names it in errors. */
function planSource(src: TransferSource, field: string): SourcePlan & { url: URL } {
  let url: URL;
  try {
    url = new URL(src.registry_url);
  } catch {
    throw bad('BAD_REQUEST', `${field}.registry_url "${src.registry_url}" is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw bad('BAD_REQUEST', `${field}.registry_url must be http:// or https://`);
  if (url.username || url.password) throw bad('BAD_REQUEST', `${field}.registry_url must not carry credentials; use ${field}.username/password`);
  if (!isRepositoryPath(src.repository)) throw bad('BAD_REQUEST', `${field}.repository "${src.repository}" is not a repository name`);
  const { username, password } = src;
  if (username !== undefined && password === undefined) throw bad('BAD_REQUEST', `${field}.username needs ${field}.password`);
  return {
    url,
    host: url.host,
    insecure: src.insecure ?? url.protocol === 'http:',
    https: url.protocol === 'https:',
    credentials: password === undefined ? undefined : { username: username ?? 'stowage', password },
    repository: src.repository,
  };
}

/** Throws a 400 StowageError naming what is wrong; parses nothing twice later. */
export function planTransfer(req: TransferRequest): TransferPlan {
  const { url, ...origin } = planSource(req.source, 'source');
  const peers = (req.peers ?? []).map((p, i) => {
    const { url: _url, ...peer } = planSource(p, `peers[${i}]`);
    return peer;
  });
  const digest = isDigest(req.ref) ? req.ref : undefined;
  if (!digest && !isValidTag(req.ref)) throw bad('INVALID_REFERENCE', `ref "${req.ref}" is neither a sha256 digest nor a tag`);
  const platform = req.platform === undefined ? undefined : parsePlatform(req.platform);
  const source: ImageReference = { domain: url.host, path: req.source.repository };
  if (digest) source.digest = digest;
  else source.tag = req.ref;
  const wanted = platform ? formatPlatform(platform) : '';
  // Requests share a transfer only from the same source: one from another source must not inherit the
  // first one's failure (a source that went down) or its token. The blobs are still fetched once (pull.ts).
  const key = digest ? `${url.host}|${digest}|${wanted}` : `${url.host}/${req.source.repository}:${req.ref}|${wanted}`;
  return {
    ...origin,
    operationId: req.operation_id,
    key,
    peers,
    source,
    digest,
    platform,
    references: normaliseReferences(req.references),
  };
}
