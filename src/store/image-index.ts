import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { StowageError } from '../errors.js';
import { isDigest, type Digest } from '../oci/digest.js';
import type { Platform } from '../oci/platform.js';
import type { ArtifactRecord, ImageIndexApi, ImageRecord, IndexRecord, ReferrerRecord, RepoDigestRecord, TagRecord } from './types.js';

/** Bump together with a new entry in MIGRATIONS; PRAGMA user_version records what a file has. */
export const SCHEMA_VERSION = 2;

/** MIGRATIONS[n] takes a database from user_version n to n + 1. */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE images (
    manifest_digest     TEXT PRIMARY KEY,
    manifest_media_type TEXT NOT NULL,
    config_digest       TEXT NOT NULL,
    platform            TEXT NOT NULL, -- JSON Platform
    layers              TEXT NOT NULL, -- JSON Digest[]
    size                INTEGER NOT NULL,
    created             TEXT,
    labels              TEXT NOT NULL, -- JSON Record<string, string>
    added_at            TEXT NOT NULL
  ) STRICT;
  CREATE INDEX images_by_config ON images (config_digest);

  CREATE TABLE indexes (
    index_digest TEXT PRIMARY KEY,
    media_type   TEXT NOT NULL,
    children     TEXT NOT NULL, -- JSON IndexRecord['children']
    added_at     TEXT NOT NULL
  ) STRICT;

  CREATE TABLE tags (
    reference  TEXT PRIMARY KEY,
    target     TEXT NOT NULL,
    updated_at TEXT NOT NULL
  ) STRICT;
  CREATE INDEX tags_by_target ON tags (target);

  CREATE TABLE repo_digests (
    repository      TEXT NOT NULL,
    digest          TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    UNIQUE (repository, digest, manifest_digest)
  ) STRICT;
  CREATE INDEX repo_digests_by_manifest ON repo_digests (manifest_digest);
  `,
  `
  CREATE TABLE artifacts (
    manifest_digest     TEXT PRIMARY KEY,
    manifest_media_type TEXT NOT NULL,
    artifact_type       TEXT NOT NULL,
    subject             TEXT,
    blobs               TEXT NOT NULL, -- JSON Digest[]
    size                INTEGER NOT NULL,
    added_at            TEXT NOT NULL
  ) STRICT;

  CREATE TABLE referrers (
    subject       TEXT NOT NULL,
    digest        TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    size          INTEGER NOT NULL,
    artifact_type TEXT,
    annotations   TEXT NOT NULL, -- JSON Record<string, string>
    added_at      TEXT NOT NULL,
    PRIMARY KEY (subject, digest)
  ) STRICT;
  CREATE INDEX referrers_by_digest ON referrers (digest);
  `,
];

interface ImageRow {
  manifest_digest: string;
  manifest_media_type: string;
  config_digest: string;
  platform: string;
  layers: string;
  size: number;
  created: string | null;
  labels: string;
  added_at: string;
}

interface IndexRow {
  index_digest: string;
  media_type: string;
  children: string;
  added_at: string;
}

interface ArtifactRow {
  manifest_digest: string;
  manifest_media_type: string;
  artifact_type: string;
  subject: string | null;
  blobs: string;
  size: number;
  added_at: string;
}

interface ReferrerRow {
  subject: string;
  digest: string;
  media_type: string;
  size: number;
  artifact_type: string | null;
  annotations: string;
  added_at: string;
}

interface TagRow {
  reference: string;
  target: string;
  updated_at: string;
}

interface RepoDigestRow {
  repository: string;
  digest: string;
  manifest_digest: string;
}

function toImage(row: ImageRow): ImageRecord {
  return {
    manifestDigest: row.manifest_digest as Digest,
    manifestMediaType: row.manifest_media_type,
    configDigest: row.config_digest as Digest,
    platform: JSON.parse(row.platform) as Platform,
    layers: JSON.parse(row.layers) as Digest[],
    size: row.size,
    created: row.created ?? undefined,
    labels: JSON.parse(row.labels) as Record<string, string>,
    addedAt: row.added_at,
  };
}

function toIndex(row: IndexRow): IndexRecord {
  const children = JSON.parse(row.children) as Array<{ digest: Digest; platform?: Platform | null; present: boolean }>;
  return {
    indexDigest: row.index_digest as Digest,
    mediaType: row.media_type,
    // JSON has no undefined: an absent platform is stored as null.
    children: children.map((c) => ({ digest: c.digest, platform: c.platform ?? undefined, present: c.present })),
    addedAt: row.added_at,
  };
}

function toArtifact(row: ArtifactRow): ArtifactRecord {
  return {
    manifestDigest: row.manifest_digest as Digest,
    manifestMediaType: row.manifest_media_type,
    artifactType: row.artifact_type,
    subject: (row.subject ?? undefined) as Digest | undefined,
    blobs: JSON.parse(row.blobs) as Digest[],
    size: row.size,
    addedAt: row.added_at,
  };
}

function toReferrer(row: ReferrerRow): ReferrerRecord {
  return {
    subject: row.subject as Digest,
    digest: row.digest as Digest,
    mediaType: row.media_type,
    size: row.size,
    artifactType: row.artifact_type ?? undefined,
    annotations: JSON.parse(row.annotations) as Record<string, string>,
    addedAt: row.added_at,
  };
}

function toTag(row: TagRow): TagRecord {
  return { reference: row.reference, target: row.target as Digest, updatedAt: row.updated_at };
}

function toRepoDigest(row: RepoDigestRow): RepoDigestRecord {
  return { repository: row.repository, digest: row.digest as Digest, manifestDigest: row.manifest_digest as Digest };
}

function requireDigest(value: unknown, what: string): Digest {
  if (!isDigest(value)) throw new StowageError('INVALID_DIGEST', `invalid ${what} "${String(value).slice(0, 80)}"`);
  return value;
}

function requireText(value: unknown, what: string): string {
  if (typeof value !== 'string' || value.length === 0) throw new StowageError('BAD_REQUEST', `${what} must be a non-empty string`);
  return value;
}

/** The image records of one machine, in `<root>/images.db`. Every write is one transaction. */
export class ImageIndex implements ImageIndexApi {
  private readonly db: Database.Database;
  /** Prepared once per SQL text: inventories and prunes call these in loops. */
  private readonly statements = new Map<string, Database.Statement>();
  private readonly listeners = new Set<() => void>();
  /** Depth of transaction() calls under way, and whether a write happened in the outer one. */
  private depth = 0;
  private dirty = false;

  private sql(text: string): Database.Statement {
    let stmt = this.statements.get(text);
    if (!stmt) {
      stmt = this.db.prepare(text);
      this.statements.set(text, stmt);
    }
    return stmt;
  }

  private constructor(db: Database.Database) {
    this.db = db;
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** After a write: listeners hear of it now, or once the outer transaction has committed. */
  private changed(): void {
    if (this.depth > 0) {
      this.dirty = true;
      return;
    }
    for (const listener of [...this.listeners]) {
      try {
        listener();
      } catch {
        // A listener's failure must not turn a committed write into an error.
      }
    }
  }

  static open(root: string): ImageIndex {
    mkdirSync(root, { recursive: true });
    const db = new Database(join(root, 'images.db'));
    try {
      db.pragma('journal_mode = WAL');
      // Blobs are fsynced before they are recorded; the records deserve the same durability.
      db.pragma('synchronous = FULL');
      db.pragma('busy_timeout = 5000');
      migrate(db);
    } catch (err) {
      db.close();
      throw err;
    }
    return new ImageIndex(db);
  }

  putImage(record: Omit<ImageRecord, 'addedAt'>): ImageRecord {
    requireDigest(record.manifestDigest, 'manifest digest');
    requireDigest(record.configDigest, 'config digest');
    record.layers.forEach((l) => requireDigest(l, 'layer digest'));
    if (!Number.isSafeInteger(record.size) || record.size < 0) throw new StowageError('BAD_REQUEST', `invalid image size ${record.size}`);
    const now = new Date().toISOString();
    // Re-recording an image updates it but keeps when it first arrived (RETURNING gives the row as stored).
    const row = this.sql(
      `INSERT INTO images (manifest_digest, manifest_media_type, config_digest, platform, layers, size, created, labels, added_at)
       VALUES (@manifestDigest, @manifestMediaType, @configDigest, @platform, @layers, @size, @created, @labels, @addedAt)
       ON CONFLICT (manifest_digest) DO UPDATE SET
         manifest_media_type = excluded.manifest_media_type, config_digest = excluded.config_digest,
         platform = excluded.platform, layers = excluded.layers, size = excluded.size,
         created = excluded.created, labels = excluded.labels
       RETURNING *`,
    )
      .get({
        manifestDigest: record.manifestDigest,
        manifestMediaType: requireText(record.manifestMediaType, 'manifest media type'),
        configDigest: record.configDigest,
        platform: JSON.stringify(record.platform),
        layers: JSON.stringify(record.layers),
        size: record.size,
        created: record.created ?? null,
        labels: JSON.stringify(record.labels ?? {}),
        addedAt: now,
      }) as ImageRow;
    this.changed();
    return toImage(row);
  }

  getImage(manifestDigest: Digest): ImageRecord | undefined {
    const row = this.sql('SELECT * FROM images WHERE manifest_digest = ?').get(manifestDigest) as ImageRow | undefined;
    return row && toImage(row);
  }

  imagesByConfig(configDigest: Digest): ImageRecord[] {
    const rows = this.sql('SELECT * FROM images WHERE config_digest = ? ORDER BY added_at, manifest_digest').all(configDigest) as ImageRow[];
    return rows.map(toImage);
  }

  listImages(): ImageRecord[] {
    return (this.sql('SELECT * FROM images ORDER BY added_at, manifest_digest').all() as ImageRow[]).map(toImage);
  }

  /** Also drops the tags that point at the image and its repo digests: they would dangle otherwise. */
  deleteImage(manifestDigest: Digest): void {
    this.db.transaction(() => {
      this.sql('DELETE FROM images WHERE manifest_digest = ?').run(manifestDigest);
      this.sql('DELETE FROM referrers WHERE digest = ?').run(manifestDigest);
      this.sql('DELETE FROM tags WHERE target = ?').run(manifestDigest);
      this.sql('DELETE FROM repo_digests WHERE manifest_digest = ?').run(manifestDigest);
    })();
    this.changed();
  }

  putIndex(record: Omit<IndexRecord, 'addedAt'>): IndexRecord {
    requireDigest(record.indexDigest, 'index digest');
    record.children.forEach((c) => requireDigest(c.digest, 'index child digest'));
    const children = record.children.map((c) => ({ digest: c.digest, platform: c.platform ?? null, present: Boolean(c.present) }));
    const row = this.sql(
      `INSERT INTO indexes (index_digest, media_type, children, added_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (index_digest) DO UPDATE SET media_type = excluded.media_type, children = excluded.children
       RETURNING *`,
    )
      .get(record.indexDigest, requireText(record.mediaType, 'index media type'), JSON.stringify(children), new Date().toISOString()) as IndexRow;
    this.changed();
    return toIndex(row);
  }

  getIndex(indexDigest: Digest): IndexRecord | undefined {
    const row = this.sql('SELECT * FROM indexes WHERE index_digest = ?').get(indexDigest) as IndexRow | undefined;
    return row && toIndex(row);
  }

  listIndexes(): IndexRecord[] {
    return (this.sql('SELECT * FROM indexes ORDER BY added_at, index_digest').all() as IndexRow[]).map(toIndex);
  }

  /** Also drops the tags that point at the index. Child images are separate records and stay. */
  deleteIndex(indexDigest: Digest): void {
    this.db.transaction(() => {
      this.sql('DELETE FROM indexes WHERE index_digest = ?').run(indexDigest);
      this.sql('DELETE FROM referrers WHERE digest = ?').run(indexDigest);
      this.sql('DELETE FROM tags WHERE target = ?').run(indexDigest);
    })();
    this.changed();
  }

  putArtifact(record: Omit<ArtifactRecord, 'addedAt'>): ArtifactRecord {
    requireDigest(record.manifestDigest, 'manifest digest');
    if (record.subject !== undefined) requireDigest(record.subject, 'subject digest');
    record.blobs.forEach((b) => requireDigest(b, 'artifact blob digest'));
    if (!Number.isSafeInteger(record.size) || record.size < 0) throw new StowageError('BAD_REQUEST', `invalid artifact size ${record.size}`);
    const row = this.sql(
      `INSERT INTO artifacts (manifest_digest, manifest_media_type, artifact_type, subject, blobs, size, added_at)
       VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (manifest_digest) DO UPDATE SET
         manifest_media_type = excluded.manifest_media_type, artifact_type = excluded.artifact_type,
         subject = excluded.subject, blobs = excluded.blobs, size = excluded.size
       RETURNING *`,
    ).get(
      record.manifestDigest,
      requireText(record.manifestMediaType, 'manifest media type'),
      requireText(record.artifactType, 'artifact type'),
      record.subject ?? null,
      JSON.stringify(record.blobs),
      record.size,
      new Date().toISOString(),
    ) as ArtifactRow;
    this.changed();
    return toArtifact(row);
  }

  getArtifact(manifestDigest: Digest): ArtifactRecord | undefined {
    const row = this.sql('SELECT * FROM artifacts WHERE manifest_digest = ?').get(manifestDigest) as ArtifactRow | undefined;
    return row && toArtifact(row);
  }

  listArtifacts(): ArtifactRecord[] {
    return (this.sql('SELECT * FROM artifacts ORDER BY added_at, manifest_digest').all() as ArtifactRow[]).map(toArtifact);
  }

  deleteArtifact(manifestDigest: Digest): void {
    this.db.transaction(() => {
      this.sql('DELETE FROM artifacts WHERE manifest_digest = ?').run(manifestDigest);
      this.sql('DELETE FROM referrers WHERE digest = ?').run(manifestDigest);
      this.sql('DELETE FROM tags WHERE target = ?').run(manifestDigest);
    })();
    this.changed();
  }

  putReferrer(record: Omit<ReferrerRecord, 'addedAt'>): ReferrerRecord {
    requireDigest(record.subject, 'subject digest');
    requireDigest(record.digest, 'referrer digest');
    const row = this.sql(
      `INSERT INTO referrers (subject, digest, media_type, size, artifact_type, annotations, added_at) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (subject, digest) DO UPDATE SET media_type = excluded.media_type, size = excluded.size,
         artifact_type = excluded.artifact_type, annotations = excluded.annotations
       RETURNING *`,
    ).get(
      record.subject,
      record.digest,
      requireText(record.mediaType, 'referrer media type'),
      record.size,
      record.artifactType ?? null,
      JSON.stringify(record.annotations ?? {}),
      new Date().toISOString(),
    ) as ReferrerRow;
    this.changed();
    return toReferrer(row);
  }

  referrersOf(subject: Digest): ReferrerRecord[] {
    return (this.sql('SELECT * FROM referrers WHERE subject = ? ORDER BY added_at, digest').all(subject) as ReferrerRow[]).map(toReferrer);
  }

  removeReferrer(digest: Digest): void {
    if (this.sql('DELETE FROM referrers WHERE digest = ?').run(digest).changes > 0) this.changed();
  }

  tag(reference: string, target: Digest): TagRecord {
    requireText(reference, 'reference');
    requireDigest(target, 'tag target');
    const row: TagRow = { reference, target, updated_at: new Date().toISOString() };
    this.sql(
      `INSERT INTO tags (reference, target, updated_at) VALUES (@reference, @target, @updated_at)
       ON CONFLICT (reference) DO UPDATE SET target = excluded.target, updated_at = excluded.updated_at`,
    )
      .run(row);
    this.changed();
    return toTag(row);
  }

  untag(reference: string): boolean {
    const removed = this.sql('DELETE FROM tags WHERE reference = ?').run(reference).changes > 0;
    if (removed) this.changed();
    return removed;
  }

  resolveTag(reference: string): Digest | undefined {
    const row = this.sql('SELECT target FROM tags WHERE reference = ?').get(reference) as { target: string } | undefined;
    return row?.target as Digest | undefined;
  }

  listTags(): TagRecord[] {
    return (this.sql('SELECT * FROM tags ORDER BY reference').all() as TagRow[]).map(toTag);
  }

  tagsFor(target: Digest): TagRecord[] {
    return (this.sql('SELECT * FROM tags WHERE target = ? ORDER BY reference').all(target) as TagRow[]).map(toTag);
  }

  addRepoDigest(record: RepoDigestRecord): void {
    requireText(record.repository, 'repository');
    requireDigest(record.digest, 'repo digest');
    requireDigest(record.manifestDigest, 'manifest digest');
    this.sql('INSERT OR IGNORE INTO repo_digests (repository, digest, manifest_digest) VALUES (?, ?, ?)')
      .run(record.repository, record.digest, record.manifestDigest);
    this.changed();
  }

  repoDigestsFor(manifestDigest: Digest): RepoDigestRecord[] {
    const rows = this.sql('SELECT * FROM repo_digests WHERE manifest_digest = ? ORDER BY repository, digest')
      .all(manifestDigest) as RepoDigestRow[];
    return rows.map(toRepoDigest);
  }

  removeRepoDigests(manifestDigest: Digest): void {
    this.sql('DELETE FROM repo_digests WHERE manifest_digest = ?').run(manifestDigest);
    this.changed();
  }

  /**
   * Manifests, configs and layers of every image; every index and the children it lists; every artifact's
   * manifest and blobs; every tag target. Listing more than strictly needed only keeps a blob longer; listing less loses data.
   */
  referencedBlobs(): Set<Digest> {
    const refs = new Set<Digest>();
    // One read transaction: a consistent snapshot even while another connection writes.
    this.db.transaction(() => {
      for (const row of this.sql('SELECT manifest_digest, config_digest, layers FROM images').iterate() as Iterable<ImageRow>) {
        refs.add(row.manifest_digest as Digest);
        refs.add(row.config_digest as Digest);
        for (const layer of JSON.parse(row.layers) as Digest[]) refs.add(layer);
      }
      for (const row of this.sql('SELECT index_digest, children FROM indexes').iterate() as Iterable<IndexRow>) {
        refs.add(row.index_digest as Digest);
        for (const child of JSON.parse(row.children) as Array<{ digest: Digest }>) refs.add(child.digest);
      }
      for (const row of this.sql('SELECT manifest_digest, blobs FROM artifacts').iterate() as Iterable<ArtifactRow>) {
        refs.add(row.manifest_digest as Digest);
        for (const blob of JSON.parse(row.blobs) as Digest[]) refs.add(blob);
      }
      for (const row of this.sql('SELECT target FROM tags').iterate() as Iterable<{ target: string }>) {
        refs.add(row.target as Digest);
      }
    })();
    return refs;
  }

  transaction<T>(fn: () => T): T {
    // Each write method is a transaction of its own; better-sqlite3 nests those as savepoints.
    this.depth++;
    let result: T;
    try {
      result = this.db.transaction(fn)();
    } catch (err) {
      if (--this.depth === 0) this.dirty = false; // rolled back: nothing to announce
      throw err;
    }
    if (--this.depth === 0 && this.dirty) {
      this.dirty = false;
      this.changed();
    }
    return result;
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}

function migrate(db: Database.Database): void {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > SCHEMA_VERSION) {
    throw new StowageError('UNSUPPORTED', `images.db has schema version ${current}; this Stowage understands up to ${SCHEMA_VERSION}`);
  }
  for (let v = current; v < SCHEMA_VERSION; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}
