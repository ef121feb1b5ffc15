import { StowageError, isStowageError } from '../../errors.js';
import type { Digest } from '../../oci/digest.js';
import { type Descriptor, type ImageManifest, parseImageConfig } from '../../oci/manifest.js';
import { type Platform, formatPlatform } from '../../oci/platform.js';
import type { RegistryClient } from '../../registry/client.js';
import { forEachLimited } from '../../registry/pool.js';
import { hasKernelspec, isOperationImage, resourceLimits, supportedAccelerators } from './labels.js';
import type { ScannedImage } from './store.js';

/**
 * Walks a registry: _catalog, then tags/list of each repository (both Link-paginated by the client), then
 * each tag's manifest (any of the four kinds; one row per platform of an index) and image config. What
 * cannot be read is reported in `problems` and listed in `unreadable` so the catalog keeps what it knew.
 * A tag whose own manifest answers 404 (deleted between tags/list and the GET) has no rows: it goes.
 * Rows of images without an `ai.backend.kernelspec` label are left out (`skipped`), as Backend.AI does.
 * With `signal`, nothing new starts once it is aborted and the scan rejects with its reason: a partial
 * walk is never returned (its missing tags would read as removed).
 */

export interface ScanProgress {
  current: number;
  total: number;
  message: string;
}

export interface ScanOptions {
  registry: string;
  /** Only repositories under "<project>/". */
  project?: string | null | undefined;
  concurrency?: number;
  /** Entries per _catalog / tags/list page (the registry's Link header leads on). */
  pageSize?: number;
  onProgress?: (p: ScanProgress) => void;
  /** Aborting stops the walk: no new request starts and scanRegistry rejects with the signal's reason. */
  signal?: AbortSignal | undefined;
}

export interface ScanResult {
  rows: ScannedImage[];
  /** "repo" (its tags could not be listed) or "repo:tag" (its manifest or config could not be read). */
  unreadable: Set<string>;
  /** One line per problem, "repo:tag: why". */
  problems: string[];
  tags: number;
  /** "repo:tag" listed by tags/list whose manifest was gone by the time it was fetched (no rows: removed). */
  vanished: string[];
  /** "repo:tag/architecture" read but not recorded: not a Backend.AI image (no ai.backend.kernelspec label). */
  skipped: string[];
}

/** Bounds on what one scan takes from a registry. */
const MAX_REPOSITORIES = 100_000;
const MAX_TAGS = 1_000_000;
const MAX_PLATFORMS_PER_INDEX = 64;
const MAX_LABELS = 1_000;

export async function scanRegistry(client: RegistryClient, opts: ScanOptions): Promise<ScanResult> {
  const concurrency = opts.concurrency ?? 8;
  const pageSize = opts.pageSize ?? 100;
  const progress = opts.onProgress ?? (() => {});
  const signal = opts.signal;
  /** Throws the abort reason once the scan is cancelled: called before every new piece of work. */
  const checkAborted = () => signal?.throwIfAborted();
  const unreadable = new Set<string>();
  const problems: string[] = [];
  const vanished: string[] = [];
  const skipped: string[] = [];

  // The catalog itself failing is fatal (the registry is unreachable or refuses us): nothing changes.
  checkAborted();
  const repos: string[] = [];
  for await (const repo of client.catalog({ pageSize })) {
    checkAborted();
    if (opts.project && !repo.startsWith(`${opts.project}/`)) continue;
    repos.push(repo);
    if (repos.length > MAX_REPOSITORIES) throw new StowageError('TOO_LARGE', `registry ${opts.registry} lists more than ${MAX_REPOSITORIES} repositories`);
  }
  progress({ current: 0, total: 0, message: `found ${repos.length} repositories in ${opts.registry}` });

  const work: Array<{ repo: string; tag: string }> = [];
  await forEachLimited(repos, concurrency, async (repo) => {
    checkAborted();
    try {
      for await (const tag of client.tags(repo, { pageSize })) {
        checkAborted();
        work.push({ repo, tag });
        if (work.length > MAX_TAGS) throw new StowageError('TOO_LARGE', `registry ${opts.registry} has more than ${MAX_TAGS} tags`);
      }
    } catch (err) {
      checkAborted();
      if (isStowageError(err, 'TOO_LARGE')) throw err;
      // A repository the registry no longer knows has no tags: its rows go.
      if (isStowageError(err, 'IMAGE_NOT_FOUND')) return;
      unreadable.add(repo);
      problems.push(`${repo}: cannot list tags: ${describe(err)}`);
    }
  });
  work.sort((a, b) => (a.repo === b.repo ? a.tag.localeCompare(b.tag) : a.repo.localeCompare(b.repo)));

  const rows: ScannedImage[] = [];
  let done = 0;
  progress({ current: 0, total: work.length, message: `scanning ${work.length} tags` });
  await forEachLimited(work, concurrency, async ({ repo, tag }) => {
    checkAborted();
    try {
      const found = await scanTag(client, opts.registry, repo, tag, signal);
      if (found === undefined) vanished.push(`${repo}:${tag}`);
      for (const row of found ?? []) {
        if (hasKernelspec(row.labels)) rows.push(row);
        else skipped.push(`${repo}:${tag}/${row.architecture}`);
      }
    } catch (err) {
      checkAborted();
      unreadable.add(`${repo}:${tag}`);
      problems.push(`${repo}:${tag}: ${describe(err)}`);
    }
    checkAborted();
    done++;
    progress({ current: done, total: work.length, message: `${repo}:${tag}` });
  });
  checkAborted();
  vanished.sort();
  skipped.sort();
  return { rows, unreadable, problems, tags: work.length, vanished, skipped };
}

/**
 * The catalog rows of one tag: one for a manifest, one per runnable platform of an index (the index
 * entry's platform names the row; two entries of one platform keep the first). Undefined when the tag's
 * own manifest is gone (404): it was deleted after tags/list. A 404 further down (a child manifest, a
 * config) is an error: the tag exists but cannot be read.
 */
async function scanTag(client: RegistryClient, registry: string, repo: string, tag: string, signal: AbortSignal | undefined): Promise<ScannedImage[] | undefined> {
  let top;
  try {
    top = await client.getManifest(repo, tag);
  } catch (err) {
    if (isStowageError(err) && err.details?.['status'] === 404) return undefined;
    throw err;
  }
  signal?.throwIfAborted();
  if (top.parsed.kind === 'manifest') {
    return [await imageRow(client, { registry, repo, tag, digest: top.digest, indexDigest: null, manifest: top.parsed.manifest })];
  }
  const children = top.parsed.index.manifests.filter((d) => !isAttestation(d)).slice(0, MAX_PLATFORMS_PER_INDEX);
  const rows: ScannedImage[] = [];
  for (const child of children) {
    signal?.throwIfAborted();
    const m = await client.getManifest(repo, child.digest);
    signal?.throwIfAborted();
    if (m.parsed.kind !== 'manifest') throw new StowageError('INVALID_MANIFEST', `index ${top.digest} nests another index (${child.digest})`);
    const row = await imageRow(client, { registry, repo, tag, digest: m.digest, indexDigest: top.digest, manifest: m.parsed.manifest, indexPlatform: child.platform });
    if (!rows.some((r) => r.platform === row.platform)) rows.push(row);
  }
  return rows;
}

async function imageRow(
  client: RegistryClient,
  a: {
    registry: string;
    repo: string;
    tag: string;
    digest: Digest;
    indexDigest: Digest | null;
    manifest: ImageManifest;
    /** The index entry's platform: it names the row when given (configs may disagree or repeat). */
    indexPlatform?: Platform | undefined;
  },
): Promise<ScannedImage> {
  const configDigest = a.manifest.config.digest as Digest;
  const config = parseImageConfig(await client.getSmallBlob(a.repo, configDigest));
  const labels = boundedLabels(config.config?.Labels ?? {});
  const named = a.indexPlatform?.os && a.indexPlatform.architecture ? a.indexPlatform : undefined;
  const platform = named
    ? formatPlatform({ os: named.os, architecture: named.architecture, variant: named.variant })
    : formatPlatform({ os: config.os, architecture: config.architecture, variant: config.variant });
  const architecture = named ? named.architecture : config.architecture;
  const size = a.manifest.config.size + a.manifest.layers.reduce((n, l) => n + l.size, 0);
  return {
    registry: a.registry,
    name: a.repo,
    tag: a.tag,
    platform,
    digest: a.digest,
    index_digest: a.indexDigest,
    config_digest: configDigest,
    architecture,
    labels,
    size_bytes: size,
    resource_limits: resourceLimits(labels),
    accelerators: supportedAccelerators(labels),
    is_operation: isOperationImage(labels),
  };
}

function boundedLabels(labels: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(labels).slice(0, MAX_LABELS)) {
    if (typeof v === 'string') out[k.slice(0, 256)] = v.slice(0, 4096);
  }
  return out;
}

/** Docker buildx attestation manifests sit in indexes as "unknown/unknown": not runnable images. */
function isAttestation(d: Descriptor): boolean {
  return d.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest' || (d.platform?.os === 'unknown' && d.platform.architecture === 'unknown');
}

function describe(err: unknown): string {
  return isStowageError(err) ? `${err.code}: ${err.message}` : String((err as Error)?.message ?? err);
}
