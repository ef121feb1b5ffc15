import { z } from 'zod';
import { StowageError } from '../../errors.js';
import { RegistryClient } from '../../registry/client.js';
import { SecretBox } from '../auth/secret-box.js';
import { type Db, nowIso, secretBox } from '../db/database.js';
import './schema.js';
import { CatalogStore } from './store.js';

/**
 * Registries the control plane scans and preloads from. A registry is named by its host[:port] exactly as
 * image references spell it; `url` says how to reach it (scheme and host), credentials are optional, and
 * `project` limits scanning to repositories under "<project>/".
 */

const HOST_RE = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[a-fA-F0-9:]+\])(?::\d{1,5})?$/;

export const registryInputSchema = z
  .object({
    name: z.string().max(255).regex(HOST_RE, 'a registry name is host[:port] as in image references'),
    url: z
      .string()
      .url()
      .refine((u) => /^https?:\/\//.test(u), 'the url must be http:// or https://')
      .optional(),
    username: z.string().min(1).max(256).optional(),
    password: z.string().max(4096).optional(),
    insecure: z.boolean().default(false),
    project: z
      .string()
      .regex(/^[a-z0-9]+(?:[._-][a-z0-9]+)*$/, 'a project is one repository path component')
      .optional(),
  })
  .strict();
export type RegistryInput = z.input<typeof registryInputSchema>;

export interface RegistryRecord {
  name: string;
  url: string;
  username: string | null;
  password: string | null;
  insecure: boolean;
  project: string | null;
}

/** What APIs may show: never the password. (An update that leaves the password out keeps it, for the same user.) */
export type PublicRegistry = Omit<RegistryRecord, 'password'> & { has_password: boolean };

interface RegistryRow {
  name: string;
  url: string;
  username: string | null;
  password: string | null;
  insecure: number;
  project: string | null;
}

export class RegistryStore {
  constructor(private readonly db: Db) {}

  /** Adds or replaces a registry. */
  put(input: RegistryInput): RegistryRecord {
    const parsed = registryInputSchema.safeParse(input);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new StowageError('BAD_REQUEST', `invalid registry: ${issue ? `${issue.path.join('.') || '(root)'}: ${issue.message}` : 'invalid'}`);
    }
    const r = parsed.data;
    const url = (r.url ?? `${r.insecure ? 'http' : 'https'}://${r.name}`).replace(/\/+$/, '');
    const now = nowIso();
    this.db
      .prepare(
        `INSERT INTO registries (name, url, username, password, insecure, project, created_at, updated_at)
         VALUES (@name, @url, @username, @password, @insecure, @project, @now, @now)
         ON CONFLICT(name) DO UPDATE SET url = @url, username = @username,
           password = CASE WHEN @password IS NULL AND @username IS registries.username THEN registries.password ELSE @password END, insecure = @insecure,
           project = @project, updated_at = @now`,
      )
      .run({
        name: r.name,
        url,
        username: r.username ?? null,
        // Sealed (see SecretBox): the database alone does not give the registry's password away.
        password: r.password === undefined ? null : secretBox(this.db).seal(r.password, passwordPurpose(r.name)),
        insecure: r.insecure ? 1 : 0,
        project: r.project ?? null,
        now,
      });
    return this.require(r.name);
  }

  get(name: string): RegistryRecord | undefined {
    const row = this.db.prepare('SELECT * FROM registries WHERE name = ?').get(name) as RegistryRow | undefined;
    return row ? this.toRecord(row) : undefined;
  }

  require(name: string): RegistryRecord {
    const r = this.get(name);
    if (!r) throw new StowageError('REGISTRY_NOT_FOUND', `no registry "${name}" is configured`, { details: { registry: name } });
    return r;
  }

  list(): RegistryRecord[] {
    return (this.db.prepare('SELECT * FROM registries ORDER BY name').all() as RegistryRow[]).map((r) => this.toRecord(r));
  }

  /** Seals passwords stored in the clear by versions before sealing; run once at start. */
  sealPlainPasswords(): void {
    const rows = this.db.prepare('SELECT name, password FROM registries WHERE password IS NOT NULL').all() as Array<{ name: string; password: string }>;
    const plain = rows.filter((r) => !SecretBox.isSealed(r.password));
    if (plain.length === 0) return;
    const update = this.db.prepare('UPDATE registries SET password = ? WHERE name = ?');
    this.db.transaction(() => {
      for (const r of plain) update.run(secretBox(this.db).seal(r.password, passwordPurpose(r.name)), r.name);
    })();
    this.db.pragma('wal_checkpoint(TRUNCATE)');
  }

  private toRecord(r: RegistryRow): RegistryRecord {
    const password = r.password === null ? null : secretBox(this.db).open(r.password, passwordPurpose(r.name));
    return { name: r.name, url: r.url, username: r.username, password, insecure: r.insecure === 1, project: r.project };
  }

  /** Removes the registry, (by cascade) its catalog rows and the aliases left naming nothing: one transaction. */
  delete(name: string): boolean {
    return this.db.transaction(() => {
      const gone = this.db.prepare('DELETE FROM registries WHERE name = ?').run(name).changes > 0;
      if (gone) new CatalogStore(this.db).dropOrphanAliases();
      return gone;
    })();
  }
}

function passwordPurpose(registry: string): string {
  return `registry-password:${registry}`;
}

export function publicRegistry(r: RegistryRecord): PublicRegistry {
  const { password, ...rest } = r;
  return { ...rest, has_password: password !== null && password !== '' };
}

/** Is the registry reached over plain HTTP? */
export function isPlainHttp(r: RegistryRecord): boolean {
  return r.insecure || r.url.startsWith('http://');
}

/** A distribution client for the registry, at the url's host, with its credentials. */
export function registryClient(r: RegistryRecord): RegistryClient {
  const host = new URL(r.url).host;
  return new RegistryClient({
    host,
    insecure: isPlainHttp(r),
    ...(r.username ? { credentials: { username: r.username, password: r.password ?? '' } } : {}),
  });
}
