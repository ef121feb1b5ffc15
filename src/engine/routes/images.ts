import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { StowageError } from '../../errors.js';
import type { Digest } from '../../oci/digest.js';
import { type ImageReference, familiarName, familiarString, formatReference, isImageIdLike, parseReference, withDefaultTag, withTag } from '../../oci/reference.js';
import { exportArchive, type ExportTarget } from '../../store/export-archive.js';
import { importArchive } from '../../store/import-archive.js';
import type { EngineContext } from '../context.js';
import { imageHistory, inspectImage, summary, unixSeconds } from '../inspect.js';
import { boolParam, boolParamOr, filterBool, listParam, matchLabels, parseFilters, parseTimestamp, pathMatch, strParam } from '../params.js';
import { deleteImage, pruneImages } from '../remove.js';
import { type LocalImage, findImage, inventory, isDangling, platformRecord, resolveImage } from '../resolve.js';
import { BuildCache } from '../build/cache.js';
import { openJsonStream, sendError } from '../stream.js';
import { handlePush } from './push.js';

type Q = Record<string, unknown>;

function query(request: FastifyRequest): Q {
  return (request.query ?? {}) as Q;
}

function json(reply: FastifyReply, body: unknown, status = 200): FastifyReply {
  return reply.code(status).header('content-type', 'application/json').send(Buffer.from(JSON.stringify(body)));
}

// ---------------------------------------------------------------------------------------------------------
// GET /images/json

const LIST_FILTERS = ['before', 'since', 'dangling', 'label', 'reference'] as const;

/** Docker's FamiliarMatch: the pattern against FamiliarString, then FamiliarName. */
function familiarMatch(pattern: string, ref: ImageReference): boolean {
  return pathMatch(pattern, familiarString(ref)) || pathMatch(pattern, familiarName(ref));
}

export function listImages(ctx: EngineContext, q: Q): Array<Record<string, unknown>> {
  const filters = parseFilters(strParam(q, 'filters'), LIST_FILTERS);
  const all = boolParam(q, 'all');
  const danglingFilter = filters.has('dangling');
  const danglingOnly = filterBool(filters, 'dangling', false);
  const inv = inventory(ctx.images);
  const createdOf = (img: LocalImage): number => unixSeconds(img.primary.created);

  let beforeTime: number | undefined;
  let sinceTime: number | undefined;
  for (const v of filters.get('before') ?? []) beforeTime = createdOf(resolveImage(ctx.images, v, { inventory: inv }).image);
  for (const v of filters.get('since') ?? []) sinceTime = createdOf(resolveImage(ctx.images, v, { inventory: inv }).image);
  const labelFilters = filters.get('label') ?? [];
  const refPatterns = filters.get('reference') ?? [];

  const out: Array<{ created: number; body: Record<string, unknown> }> = [];
  for (const img of inv.byId.values()) {
    const created = createdOf(img);
    if (beforeTime !== undefined && created >= beforeTime) continue;
    if (sinceTime !== undefined && created <= sinceTime) continue;
    if (labelFilters.length > 0 && !matchLabels(img.primary.labels ?? {}, labelFilters)) continue;
    if (img.indexChild && !all) continue;
    let view = img;
    if (refPatterns.length > 0) {
      view = {
        ...img,
        tags: img.tags.filter((t) => refPatterns.some((p) => familiarMatch(p, t.ref))),
        digests: img.digests.filter((d) => refPatterns.some((p) => familiarMatch(p, d.ref))),
      };
      if (view.tags.length === 0 && view.digests.length === 0) continue;
    }
    const dangling = isDangling(img);
    if (dangling) {
      if (danglingFilter && !danglingOnly) continue;
    } else if (danglingOnly) continue;
    if (danglingOnly && view.tags.length > 0) continue;
    out.push({ created, body: summary(view, { dangling: dangling || img.indexChild }) });
  }
  out.sort((a, b) => b.created - a.created);
  // `digests` only changes the CLI's columns: RepoDigests are always sent.
  return out.map((o) => o.body);
}

// ---------------------------------------------------------------------------------------------------------
// POST /images/{name}/tag

export function tagImage(ctx: EngineContext, name: string, repo: string | undefined, tag: string | undefined): void {
  if (!repo) throw new StowageError('BAD_REQUEST', 'repository name must have at least one component');
  let ref: ImageReference;
  try {
    ref = parseReference(repo);
  } catch (err) {
    throw new StowageError('BAD_REQUEST', (err as Error).message);
  }
  if (ref.digest !== undefined) throw new StowageError('BAD_REQUEST', 'refusing to create a tag with a digest reference');
  if (tag) {
    try {
      ref = withTag(ref, tag);
    } catch (err) {
      throw new StowageError('BAD_REQUEST', (err as Error).message);
    }
  } else ref = withDefaultTag(ref);
  if (familiarName(ref) === 'sha256') throw new StowageError('BAD_REQUEST', 'refusing to create an ambiguous tag using digest algorithm as name');
  const hit = resolveImage(ctx.images, name);
  // A tag keeps pointing at what the source name meant: a multi-platform index stays an index.
  let target: Digest = hit.record.manifestDigest;
  if (hit.reference && hit.reference.digest === undefined) {
    target = ctx.images.resolveTag(formatReference(hit.reference)) ?? target;
  }
  ctx.images.tag(formatReference(ref), target);
}

// ---------------------------------------------------------------------------------------------------------
// GET /images/{name}/get, GET /images/get

/**
 * What `docker save` names mean, as dockerd's exporter reads them: a repository name alone is every tag of it
 * (an ID when nothing has that name); a tag, digest or ID is that image. One entry per image, with all its tags.
 */
function exportTargets(ctx: EngineContext, names: string[]): ExportTarget[] {
  const byManifest = new Map<Digest, ExportTarget>();
  const add = (manifestDigest: Digest, reference: string | undefined) => {
    const t = byManifest.get(manifestDigest) ?? { manifestDigest, references: [] };
    if (reference !== undefined && !t.references.includes(reference)) t.references.push(reference);
    byManifest.set(manifestDigest, t);
  };
  const inv = inventory(ctx.images);
  for (const name of names) {
    const repoTags = repositoryTags(ctx, name);
    if (repoTags.length > 0) {
      for (const t of repoTags) {
        const record = platformRecord(ctx.images, t.target);
        if (record) add(record.manifestDigest, t.reference);
      }
      continue;
    }
    const hit = resolveImage(ctx.images, name, { inventory: inv });
    add(hit.record.manifestDigest, hit.reference && hit.reference.tag !== undefined && hit.reference.digest === undefined ? formatReference(hit.reference) : undefined);
  }
  return [...byManifest.values()];
}

/** The tags of `name` when it is a repository name alone (no tag, no digest), sorted; else none. */
function repositoryTags(ctx: EngineContext, name: string): Array<{ reference: string; target: Digest }> {
  let ref: ImageReference;
  try {
    ref = parseReference(name);
  } catch {
    return [];
  }
  if (ref.tag !== undefined || ref.digest !== undefined) return [];
  const prefix = `${formatReference(ref)}:`;
  return ctx.images
    .listTags()
    .filter((t) => t.reference.startsWith(prefix) && !t.reference.slice(prefix.length).includes('@'))
    .sort((a, b) => (a.reference < b.reference ? -1 : 1));
}

/** Waits for the first chunk so a failure before any byte is still an HTTP error. */
async function primed(stream: Readable): Promise<Readable> {
  const it = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const first = await it.next();
  return Readable.from(
    (async function* () {
      if (!first.done) yield first.value;
      for (;;) {
        const n = await it.next();
        if (n.done) return;
        yield n.value;
      }
    })(),
    { objectMode: false },
  );
}

async function sendArchive(ctx: EngineContext, reply: FastifyReply, names: string[]): Promise<FastifyReply> {
  const targets = exportTargets(ctx, names);
  const body = await primed(exportArchive(targets, { store: ctx.store, images: ctx.images }));
  return reply.code(200).header('content-type', 'application/x-tar').send(body);
}

// ---------------------------------------------------------------------------------------------------------
// POST /images/load

async function loadImages(ctx: EngineContext, request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  // dockerd answers 200 and reports every failure in the stream; like it, nothing is sent before the
  // archive was read (Go clients stop sending the body once an answer arrives).
  const out = openJsonStream(reply);
  try {
    const before = new Map(ctx.images.listTags().map((t) => [t.reference, t.target]));
    const result = await importArchive(request.raw, { store: ctx.store, images: ctx.images });
    for (const img of result.images) {
      const refs = img.references;
      for (const r of refs) {
        const ref = parseReference(r);
        const old = before.get(r);
        if (old !== undefined) {
          const oldRec = ctx.images.getImage(old);
          const oldId = oldRec?.configDigest;
          if (oldId && oldId !== img.configDigest) {
            out.write({ stream: `The image ${familiarString(ref)} already exists, renaming the old one with ID ${oldId} to empty string\n` });
          }
        }
      }
      if (refs.length === 0) out.write({ stream: `Loaded image ID: ${img.configDigest}\n` });
      for (const r of refs) out.write({ stream: `Loaded image: ${familiarString(parseReference(r))}\n` });
    }
    if (result.images.length === 0) out.write({ stream: 'No images to load\n' });
    out.end();
  } catch (err) {
    // Drain what the client still sends so it sees the answer rather than a reset.
    request.raw.resume();
    out.begin();
    out.error(err);
  }
  return reply;
}

// ---------------------------------------------------------------------------------------------------------
// Registration

/** Splits "<name>/<action>" of a wildcard path; the name may hold '/', ':' and '@'. */
function splitAction(path: string, actions: readonly string[]): { name: string; action: string } | undefined {
  for (const a of actions) {
    if (path.endsWith(`/${a}`)) return { name: path.slice(0, -(a.length + 1)), action: a };
  }
  return undefined;
}

function wildcard(request: FastifyRequest): string {
  return ((request.params as Record<string, string>)['*'] ?? '').replace(/\/+$/, '');
}

/**
 * An image a build step made (the IDs `docker build` prints after each step): not an image record, found in
 * the build cache by ID or ID prefix while its blobs are still stored.
 */
async function buildStepImage(ctx: EngineContext, name: string): Promise<LocalImage | undefined> {
  if (!isImageIdLike(name)) return undefined;
  const step = await BuildCache.for(ctx.workDir).findStep(name);
  if (!step || !(await ctx.store.has(step.image.configDigest)) || !(await ctx.store.has(step.image.manifestDigest))) return undefined;
  const record = { ...step.image, created: step.image.created, addedAt: step.createdAt };
  return { id: record.configDigest, records: [record], primary: record, tags: [], digests: [], indexChild: false };
}

export function register(app: FastifyInstance, ctx: EngineContext): void {
  app.get('/images/json', async (request, reply) => json(reply, listImages(ctx, query(request))));

  app.get('/images/get', async (request, reply) => {
    const names = listParam(query(request), 'names')
      .flatMap((n) => n.split(','))
      .map((n) => n.trim())
      .filter((n) => n !== '');
    if (names.length === 0) throw new StowageError('BAD_REQUEST', 'no images specified');
    return sendArchive(ctx, reply, names);
  });

  app.get('/images/*', async (request, reply) => {
    const hit = splitAction(wildcard(request), ['json', 'history', 'get']);
    if (!hit || hit.name === '') return json(reply, { message: 'page not found' }, 404);
    if (hit.action === 'get') return sendArchive(ctx, reply, [hit.name]);
    const img = findImage(ctx.images, hit.name)?.image ?? (await buildStepImage(ctx, hit.name)) ?? resolveImage(ctx.images, hit.name).image;
    if (hit.action === 'json') return json(reply, await inspectImage(ctx.store, ctx.images, img));
    return json(reply, await imageHistory(ctx.store, img));
  });

  app.delete('/images/*', async (request, reply) => {
    const name = wildcard(request);
    if (name === '') return json(reply, { message: 'page not found' }, 404);
    const q = query(request);
    const out = await deleteImage(ctx, name, { force: boolParam(q, 'force'), noprune: boolParam(q, 'noprune') });
    return json(reply, out.items);
  });

  app.post('/images/*', async (request, reply) => {
    const hit = splitAction(wildcard(request), ['tag', 'push']);
    if (!hit || hit.name === '') return json(reply, { message: 'page not found' }, 404);
    if (hit.action === 'push') return handlePush(request, reply, ctx, hit.name);
    const q = query(request);
    tagImage(ctx, hit.name, strParam(q, 'repo'), strParam(q, 'tag'));
    return reply.code(201).send();
  });

  app.post('/images/prune', async (request, reply) => {
    const filters = parseFilters(strParam(query(request), 'filters'), ['dangling', 'until', 'label', 'label!']);
    const untilValues = filters.get('until') ?? [];
    if (untilValues.length > 1) throw new StowageError('BAD_REQUEST', 'more than one until filter specified');
    const result = await pruneImages(ctx, {
      danglingOnly: filterBool(filters, 'dangling', true),
      until: untilValues[0] !== undefined ? parseTimestamp(untilValues[0]) : undefined,
      labels: filters.get('label') ?? [],
      notLabels: filters.get('label!') ?? [],
      match: matchLabels,
    });
    return json(reply, result);
  });

  app.post('/images/load', async (request, reply) => {
    boolParamOr(query(request), 'quiet', true);
    return loadImages(ctx, request, reply);
  });

  app.post('/commit', async (request, reply) => {
    const container = strParam(query(request), 'container') ?? '';
    request.raw.resume();
    return sendError(reply, new StowageError('IMAGE_NOT_FOUND', `No such container: ${container}`));
  });
}
