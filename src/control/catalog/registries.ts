import { sql } from 'kysely';
import { z } from 'zod';
import { StowageError } from '../../errors.js';
import { RegistryClient } from '../../registry/client.js';
import { SecretBox } from '../auth/secret-box.js';
import { type Db, nowIso, secretBox } from '../db/database.js';
import './schema.js';
import { dropOrphanAliases } from './store.js';

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
  async put(input: RegistryInput): Promise<RegistryRecord> {
    const parsed = registryInputSchema.safeParse(input);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new StowageError('BAD_REQUEST', `invalid registry: ${issue ? `${issue.path.join('.') || '(root)'}: ${issue.message}` : 'invalid'}`);
    }
    const r = parsed.data;
    const url = (r.url ?? `${r.insecure ? 'http' : 'https'}://${r.name}`).replace(/\/+$/, '');
    const now = nowIso();
    const username = r.username ?? null;
    // Sealed (see SecretBox): the database alone does not give the registry's password away.
    const password = r.password === undefined ? null : secretBox(this.db).seal(r.password, passwordPurpose(r.name));
    const insecure = r.insecure ? 1 : 0;
    const project = r.project ?? null;
    // An update without a password keeps the stored one, for the same user.
    await this.db.run(
      sql`INSERT INTO registries (name, url, username, password, insecure, project, created_at, updated_at)
          VALUES (${r.name}, ${url}, ${username}, ${password}, ${insecure}, ${project}, ${now}, ${now})
          ON CONFLICT(name) DO UPDATE SET url = excluded.url, username = excluded.username,
            password = CASE WHEN excluded.password IS NULL AND excluded.username IS NOT DISTINCT FROM registries.username
              THEN registries.password ELSE excluded.password END,
            insecure = excluded.insecure, project = excluded.project, updated_at = excluded.updated_at`,
    );
    return this.require(r.name);
  }

  async get(name: string): Promise<RegistryRecord | undefined> {
    const row = await this.db.get<RegistryRow>(sql`SELECT * FROM registries WHERE name = ${name}`);
    return row ? this.toRecord(row) : undefined;
  }

  async require(name: string): Promise<RegistryRecord> {
    const r = await this.get(name);
    if (!r) throw new StowageError('REGISTRY_NOT_FOUND', `no registry "${name}" is configured`, { details: { registry: name } });
    return r;
  }

  async list(): Promise<RegistryRecord[]> {
    return (await this.db.all<RegistryRow>(sql`SELECT * FROM registries ORDER BY name`)).map((r) => this.toRecord(r));
  }

  /** Seals passwords stored in the clear by versions before sealing; run once at start. */
  async sealPlainPasswords(): Promise<void> {
    const rows = await this.db.all<{ name: string; password: string }>(sql`SELECT name, password FROM registries WHERE password IS NOT NULL`);
    const plain = rows.filter((r) => !SecretBox.isSealed(r.password));
    if (plain.length === 0) return;
    await this.db.transaction(async (tx) => {
      for (const r of plain) await tx.run(sql`UPDATE registries SET password = ${secretBox(tx).seal(r.password, passwordPurpose(r.name))} WHERE name = ${r.name}`);
    });
    if (this.db.dialect === 'sqlite') await this.db.all(sql`PRAGMA wal_checkpoint(TRUNCATE)`);
  }

  private toRecord(r: RegistryRow): RegistryRecord {
    const password = r.password === null ? null : secretBox(this.db).open(r.password, passwordPurpose(r.name));
    return { name: r.name, url: r.url, username: r.username, password, insecure: Number(r.insecure) === 1, project: r.project };
  }

  /** Removes the registry, (by cascade) its catalog rows and the aliases left naming nothing: one transaction. */
  delete(name: string): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      const gone = (await tx.run(sql`DELETE FROM registries WHERE name = ${name}`)) > 0;
      if (gone) await dropOrphanAliases(tx);
      return gone;
    });
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
