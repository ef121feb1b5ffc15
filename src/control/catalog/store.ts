import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { StowageError } from '../../errors.js';
import { defaultPlatform, parsePlatform, platformMatches } from '../../oci/platform.js';
import { parseReference } from '../../oci/reference.js';
import { type Db, nowIso } from '../db/database.js';
import { inList } from '../db/in-list.js';
import type { ResourceLimit } from './labels.js';
import './schema.js';

/**
 * The image catalog: what rescans found, one row per (registry, repository, tag, platform), and aliases
 * that name a (registry, repository, tag). References resolve as image references first, then as aliases:
 * an alias never shadows a catalog image (and one that names a catalog image is refused).
 */

export interface CatalogImage {
  /** A UUID naming this row (Backend.AI's Image.id); kept across rescans. */
  id: string;
  registry: string;
  /** Repository path inside the registry ("test/app"). */
  name: string;
  tag: string;
  /** "linux/arm64/v8". */
  platform: string;
  /** The platform manifest digest. */
  digest: string;
  index_digest: string | null;
  config_digest: string;
  architecture: string;
  labels: Record<string, string>;
  size_bytes: number;
  resource_limits: ResourceLimit[];
  accelerators: string[];
  is_operation: boolean;
}

/** A row as a scan finds it, before the catalog names it with an id. */
export type ScannedImage = Omit<CatalogImage, 'id'>;

/** A catalog entry's identity without its platform: what references and aliases name. */
export interface ImageKey {
  registry: string;
  name: string;
  tag: string;
}

interface ImageRow {
  id: string;
  registry: string;
  name: string;
  tag: string;
  platform: string;
  digest: string;
  index_digest: string | null;
  config_digest: string;
  architecture: string;
  labels: string;
  size_bytes: number;
  resource_limits: string;
  accelerators: string;
  is_operation: number;
}

const ALIAS_RE = /^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,254}$/;

export function formatKey(k: ImageKey): string {
  return `${k.registry}/${k.name}:${k.tag}`;
}

export class CatalogStore {
  constructor(private readonly db: Db) {}

  /**
   * Records one scan of `registry`: upserts `rows` and removes every row of the registry the scan did not
   * see, except those of repositories or tags the scan could not read (`unreadable`, "repo" or "repo:tag"),
   * which keep what an earlier scan found. Aliases left pointing at nothing go too. One transaction.
   */
  async applyScan(
    registry: string,
    rows: readonly ScannedImage[],
    unreadable: ReadonlySet<string>,
    scope?: { project: string },
  ): Promise<{ added: number; removed: number }> {
    for (const r of rows) {
      if (r.registry !== registry) throw new StowageError('INTERNAL', `scan row of ${r.registry} recorded under ${registry}`);
    }
    const now = nowIso();
    let removed = 0;
    await this.db.transaction(async (tx) => {
      removed = 0; // counted afresh should the transaction run again
      const seen = new Set(rows.map((r) => `${r.name}:${r.tag}@${r.platform}`));
      const existing = await tx.all<{ name: string; tag: string; platform: string }>(
        sql`SELECT name, tag, platform FROM catalog_images WHERE registry = ${registry}${tx.forUpdate}`,
      );
      for (const e of existing) {
        if (seen.has(`${e.name}:${e.tag}@${e.platform}`) || unreadable.has(e.name) || unreadable.has(`${e.name}:${e.tag}`)) continue;
        // A scan of one project says nothing about the registry's other repositories.
        if (scope && !e.name.startsWith(`${scope.project}/`)) continue;
        removed += await tx.run(
          sql`DELETE FROM catalog_images WHERE registry = ${registry} AND name = ${e.name} AND tag = ${e.tag} AND platform = ${e.platform}`,
        );
      }
      for (const r of rows) {
        await tx.run(
          sql`INSERT INTO catalog_images (id, registry, name, tag, platform, digest, index_digest, config_digest, architecture, labels, size_bytes,
                resource_limits, accelerators, is_operation, scanned_at)
              VALUES (${randomUUID()}, ${registry}, ${r.name}, ${r.tag}, ${r.platform}, ${r.digest}, ${r.index_digest}, ${r.config_digest},
                ${r.architecture}, ${JSON.stringify(r.labels)}, ${r.size_bytes}, ${JSON.stringify(r.resource_limits)}, ${JSON.stringify(r.accelerators)},
                ${r.is_operation ? 1 : 0}, ${now})
              ON CONFLICT(registry, name, tag, platform) DO UPDATE SET digest = excluded.digest, index_digest = excluded.index_digest,
                config_digest = excluded.config_digest, architecture = excluded.architecture, labels = excluded.labels, size_bytes = excluded.size_bytes,
                resource_limits = excluded.resource_limits, accelerators = excluded.accelerators, is_operation = excluded.is_operation,
                scanned_at = excluded.scanned_at`,
        );
      }
      await dropOrphanAliases(tx);
    });
    return { added: rows.length, removed };
  }

  /** Every row, optionally of some registries only. */
  async list(opts: { registries?: readonly string[] | undefined } = {}): Promise<CatalogImage[]> {
    if (opts.registries !== undefined && opts.registries.length === 0) return [];
    const where = opts.registries ? sql`WHERE registry IN ${inList(opts.registries)}` : sql``;
    const rows = await this.db.all<ImageRow>(sql`SELECT * FROM catalog_images ${where} ORDER BY registry, name, tag, platform`);
    return rows.map(toImage);
  }

  /** The rows of one tag (every platform). */
  async rowsOf(key: ImageKey): Promise<CatalogImage[]> {
    const rows = await this.db.all<ImageRow>(
      sql`SELECT * FROM catalog_images WHERE registry = ${key.registry} AND name = ${key.name} AND tag = ${key.tag} ORDER BY platform`,
    );
    return rows.map(toImage);
  }

  /**
   * The catalog rows a reference names: "registry/name:tag" (":latest" implied), "registry/name@sha256:…"
   * (a platform manifest or index digest), else an alias. A catalog image always wins over an alias
   * spelled like it. Empty when nothing matches.
   */
  async resolve(reference: string): Promise<CatalogImage[]> {
    const direct = await this.resolveReference(reference);
    if (direct.length > 0) return direct;
    const alias = await this.aliasTarget(reference);
    if (alias) return this.rowsOf(alias);
    return this.resolveShort(reference);
  }

  /**
   * A reference without its registry ("python:3.9", "lablup/python:3.9"), as Backend.AI resolves against
   * every registry: the repositories named exactly so, else those ending in "/<name>". Several
   * repositories matching is ambiguous (BAD_REQUEST naming them); none is an empty answer.
   */
  async resolveShort(reference: string): Promise<CatalogImage[]> {
    const m = /^([a-z0-9][a-z0-9._/-]{0,254}?)(?::([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?$/.exec(reference);
    if (!m) return [];
    const name = m[1] as string;
    const tag = m[2] ?? 'latest';
    const exact = await this.db.all<ImageRow>(sql`SELECT * FROM catalog_images WHERE name = ${name} AND tag = ${tag} ORDER BY registry, platform`);
    const suffix = `%/${name.replace(/[%_\\]/g, (c) => `\\${c}`)}`;
    const rows =
      exact.length > 0
        ? exact
        : await this.db.all<ImageRow>(
            sql`SELECT * FROM catalog_images WHERE tag = ${tag} AND name LIKE ${suffix} ESCAPE '\\' ORDER BY registry, name, platform`,
          );
    const keys = [...new Set(rows.map((r) => `${r.registry}/${r.name}`))];
    if (keys.length > 1) {
      throw new StowageError('BAD_REQUEST', `"${reference}" matches several images (${keys.slice(0, 5).map((k) => `${k}:${tag}`).join(', ')}): name the registry`, {
        details: { reference, candidates: keys.slice(0, 20) },
      });
    }
    return rows.map(toImage);
  }

  /** The row with this id (Image.id), if any. */
  async byId(id: string): Promise<CatalogImage | undefined> {
    const row = await this.db.get<ImageRow>(sql`SELECT * FROM catalog_images WHERE id = ${id}`);
    return row ? toImage(row) : undefined;
  }

  /** Removes one row (forget_image_by_id / purge_image_by_id), and aliases left naming nothing. */
  async forgetRow(id: string): Promise<CatalogImage> {
    return this.db.transaction(async (tx) => {
      const row = await tx.get<ImageRow>(sql`SELECT * FROM catalog_images WHERE id = ${id}${tx.forUpdate}`);
      if (!row) throw new StowageError('IMAGE_NOT_FOUND', `no image with id ${id} in the catalog`, { details: { id } });
      await tx.run(sql`DELETE FROM catalog_images WHERE id = ${id}`);
      await dropOrphanAliases(tx);
      return toImage(row);
    });
  }

  /** The rows a reference names as an image reference, aliases aside. */
  async resolveReference(reference: string): Promise<CatalogImage[]> {
    let ref;
    try {
      ref = parseReference(reference);
    } catch {
      return [];
    }
    if (ref.digest !== undefined) {
      const rows = await this.db.all<ImageRow>(
        sql`SELECT * FROM catalog_images WHERE registry = ${ref.domain} AND name = ${ref.path} AND (digest = ${ref.digest} OR index_digest = ${ref.digest})
            ORDER BY tag, platform`,
      );
      const images = rows.map(toImage);
      const tag = ref.tag;
      return tag === undefined ? images : images.filter((i) => i.tag === tag);
    }
    return this.rowsOf({ registry: ref.domain, name: ref.path, tag: ref.tag ?? 'latest' });
  }

  /** The key a reference resolves to, or IMAGE_NOT_FOUND. */
  async requireKey(reference: string): Promise<ImageKey> {
    const rows = await this.resolve(reference);
    const first = rows[0];
    if (!first) throw new StowageError('IMAGE_NOT_FOUND', `no image "${reference}" in the catalog`, { details: { reference } });
    return { registry: first.registry, name: first.name, tag: first.tag };
  }

  async aliasTarget(alias: string): Promise<ImageKey | undefined> {
    const row = await this.db.get<ImageKey>(sql`SELECT registry, name, tag FROM catalog_aliases WHERE alias = ${alias}`);
    return row ? { registry: row.registry, name: row.name, tag: row.tag } : undefined;
  }

  /** Every alias by "registry/name:tag". */
  async aliasMap(): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    for (const a of await this.db.all<ImageKey & { alias: string }>(sql`SELECT alias, registry, name, tag FROM catalog_aliases ORDER BY alias`)) {
      const k = formatKey(a);
      out.set(k, [...(out.get(k) ?? []), a.alias]);
    }
    return out;
  }

  /**
   * Points `alias` at `target` (which must resolve); an existing alias is moved. An alias that names a
   * catalog image itself is CONFLICT: it would never resolve, and would invite acting on the wrong image.
   */
  async addAlias(alias: string, target: string): Promise<ImageKey> {
    if (!ALIAS_RE.test(alias)) {
      throw new StowageError('BAD_REQUEST', `invalid alias "${alias.slice(0, 100)}": letters, digits and . _ : / @ - only, up to 255`);
    }
    const shadowed = (await this.resolveReference(alias))[0];
    if (shadowed) {
      throw new StowageError('CONFLICT', `"${alias.slice(0, 255)}" already names the catalog image ${formatKey(shadowed)}; an alias cannot shadow an image`, {
        details: { alias, image: formatKey(shadowed) },
      });
    }
    const key = await this.requireKey(target);
    await this.db.run(
      sql`INSERT INTO catalog_aliases (alias, registry, name, tag, created_at) VALUES (${alias}, ${key.registry}, ${key.name}, ${key.tag}, ${nowIso()})
          ON CONFLICT(alias) DO UPDATE SET registry = excluded.registry, name = excluded.name, tag = excluded.tag`,
    );
    return key;
  }

  async removeAlias(alias: string): Promise<void> {
    if ((await this.db.run(sql`DELETE FROM catalog_aliases WHERE alias = ${alias}`)) === 0) {
      throw new StowageError('IMAGE_NOT_FOUND', `no alias "${alias}"`, { details: { alias } });
    }
  }

  /**
   * Removes the rows of the tag a reference names: those of one OCI architecture when `architecture` is
   * given (IMAGE_NOT_FOUND when the tag has none), else every platform; aliases left naming nothing go too.
   */
  async forget(reference: string, architecture?: string): Promise<ImageKey> {
    const key = await this.requireKey(reference);
    await this.db.transaction(async (tx) => {
      if (architecture === undefined) {
        await tx.run(sql`DELETE FROM catalog_images WHERE registry = ${key.registry} AND name = ${key.name} AND tag = ${key.tag}`);
      } else {
        const gone = await tx.run(
          sql`DELETE FROM catalog_images WHERE registry = ${key.registry} AND name = ${key.name} AND tag = ${key.tag} AND architecture = ${architecture}`,
        );
        if (gone === 0) {
          throw new StowageError('IMAGE_NOT_FOUND', `${formatKey(key)} has no ${architecture} image in the catalog`, { details: { reference, architecture } });
        }
      }
      await dropOrphanAliases(tx);
    });
    return key;
  }
}

/** Removes aliases whose tag has no catalog row left (call inside the transaction that removed rows). */
export function dropOrphanAliases(tx: Db): Promise<number> {
  return tx.run(
    sql`DELETE FROM catalog_aliases WHERE NOT EXISTS (SELECT 1 FROM catalog_images i WHERE i.registry = catalog_aliases.registry
          AND i.name = catalog_aliases.name AND i.tag = catalog_aliases.tag)`,
  );
}

/** The row `image(reference)` shows for a multi-platform tag: this host's platform, else the first. */
export function preferredRow(rows: readonly CatalogImage[]): CatalogImage | undefined {
  const want = defaultPlatform();
  return (
    rows.find((r) => {
      try {
        return platformMatches(want, parsePlatform(r.platform));
      } catch {
        return false;
      }
    }) ?? rows[0]
  );
}

function toImage(r: ImageRow): CatalogImage {
  return {
    id: r.id,
    registry: r.registry,
    name: r.name,
    tag: r.tag,
    platform: r.platform,
    digest: r.digest,
    index_digest: r.index_digest,
    config_digest: r.config_digest,
    architecture: r.architecture,
    labels: JSON.parse(r.labels) as Record<string, string>,
    size_bytes: Number(r.size_bytes),
    resource_limits: JSON.parse(r.resource_limits) as ResourceLimit[],
    accelerators: JSON.parse(r.accelerators) as string[],
    is_operation: Number(r.is_operation) === 1,
  };
}
