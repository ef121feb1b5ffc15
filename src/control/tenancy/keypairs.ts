import { randomInt } from 'node:crypto';
import { type RawBuilder, sql } from 'kysely';
import { StowageError } from '../../errors.js';
import type { Principal, Role } from '../auth/api-keys.js';
import { type Db, isForeignKeyViolation, nowIso, registerMigrations, secretBox } from '../db/database.js';

/**
 * Backend.AI keypairs: an access key (public, "AKIA…", 20 characters) and a secret key (40 characters)
 * per user, with which Backend.AI's clients sign every request (hmac.ts). The server needs the secret
 * itself to check a signature, so it cannot be stored hashed: it is sealed with the database's secrets
 * key (SecretBox, a separate 0600 file), bound to its access key, so a copy of the database alone gives
 * no secret away. The secret is shown once, when made or rotated.
 */

registerMigrations([
  {
    id: '0210-keypairs',
    sql: `
      CREATE TABLE keypairs (
        access_key TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        -- The secret key sealed with the secrets key (SecretBox, purpose "keypair:<access key>").
        secret_sealed TEXT NOT NULL,
        is_active INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL,
        rotated_at TEXT,
        last_used_at TEXT
      );
      CREATE INDEX keypairs_user ON keypairs(user_id);
    `,
  },
]);

export interface Keypair {
  access_key: string;
  user_id: string;
  user_name: string;
  is_active: boolean;
  created_at: string;
  rotated_at: string | null;
  last_used_at: string | null;
}

/** A keypair as made or rotated: the only time the secret is shown. */
export interface IssuedKeypair {
  access_key: string;
  secret_key: string;
}

const UPPER_DIGITS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
const SECRET_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
export const ACCESS_KEY_RE = /^AKIA[A-Z0-9]{16}$/;

function randomString(alphabet: string, length: number): string {
  let out = '';
  for (let i = 0; i < length; i++) out += alphabet[randomInt(alphabet.length)];
  return out;
}

interface KeypairRow {
  access_key: string;
  user_id: string;
  user_name: string;
  secret_sealed: string;
  is_active: number;
  created_at: string;
  rotated_at: string | null;
  last_used_at: string | null;
  role: Role;
  domain: string | null;
}

export class KeypairStore {
  constructor(private readonly db: Db) {}

  /** A new keypair for the user; the secret is returned once. */
  async create(userId: string): Promise<IssuedKeypair> {
    const issued = { access_key: `AKIA${randomString(UPPER_DIGITS, 16)}`, secret_key: randomString(SECRET_CHARS, 40) };
    if (!(await this.db.get(sql`SELECT 1 FROM users WHERE id = ${userId}`))) throw new StowageError('BAD_REQUEST', `no user ${userId}`);
    try {
      await this.db.run(
        sql`INSERT INTO keypairs (access_key, user_id, secret_sealed, created_at)
            VALUES (${issued.access_key}, ${userId}, ${this.seal(issued.access_key, issued.secret_key)}, ${nowIso()})`,
      );
    } catch (err) {
      // The user went between the check and the insert.
      if (isForeignKeyViolation(err)) throw new StowageError('BAD_REQUEST', `no user ${userId}`);
      throw err;
    }
    return issued;
  }

  /** A new secret for an existing access key (the old secret stops working at once); shown once. */
  async rotate(accessKey: string): Promise<IssuedKeypair> {
    const secret = randomString(SECRET_CHARS, 40);
    const changed = await this.db.run(
      sql`UPDATE keypairs SET secret_sealed = ${this.seal(accessKey, secret)}, rotated_at = ${nowIso()} WHERE access_key = ${accessKey}`,
    );
    if (changed === 0) throw new StowageError('BAD_REQUEST', `no keypair ${accessKey.slice(0, 40)}`, { status: 404 });
    return { access_key: accessKey, secret_key: secret };
  }

  async setActive(accessKey: string, active: boolean): Promise<void> {
    const changed = await this.db.run(sql`UPDATE keypairs SET is_active = ${active ? 1 : 0} WHERE access_key = ${accessKey}`);
    if (changed === 0) throw new StowageError('BAD_REQUEST', `no keypair ${accessKey.slice(0, 40)}`, { status: 404 });
  }

  async delete(accessKey: string): Promise<void> {
    if ((await this.db.run(sql`DELETE FROM keypairs WHERE access_key = ${accessKey}`)) === 0) {
      throw new StowageError('BAD_REQUEST', `no keypair ${accessKey.slice(0, 40)}`, { status: 404 });
    }
  }

  async get(accessKey: string): Promise<Keypair | undefined> {
    const row = await this.row(accessKey);
    return row ? toKeypair(row) : undefined;
  }

  /** Keypairs (never their secrets), of one domain's users when `domain` is given. */
  async list(filter: { domain?: string; userId?: string } = {}): Promise<Keypair[]> {
    const where: RawBuilder<unknown>[] = [];
    if (filter.domain !== undefined) where.push(sql`u.domain = ${filter.domain}`);
    if (filter.userId !== undefined) where.push(sql`k.user_id = ${filter.userId}`);
    const rows = await this.db.all<KeypairRow>(
      sql`${sql.raw(SELECT)} ${where.length ? sql`WHERE ${sql.join(where, sql` AND `)}` : sql``} ORDER BY u.name, k.created_at`,
    );
    return rows.map(toKeypair);
  }

  /**
   * What a signature check needs: the active keypair's owner and its secret (unsealed), or undefined
   * for an unknown or inactive access key. Called before the request body is read.
   */
  async credentials(accessKey: string): Promise<{ principal: Principal; secret: string } | undefined> {
    if (!ACCESS_KEY_RE.test(accessKey)) return undefined;
    const row = await this.row(accessKey);
    if (!row || Number(row.is_active) !== 1) return undefined;
    return { principal: { userId: row.user_id, name: row.user_name, role: row.role, domain: row.domain }, secret: secretBox(this.db).open(row.secret_sealed, `keypair:${accessKey}`) };
  }

  async markUsed(accessKey: string): Promise<void> {
    await this.db.run(sql`UPDATE keypairs SET last_used_at = ${nowIso()} WHERE access_key = ${accessKey}`);
  }

  private row(accessKey: string): Promise<KeypairRow | undefined> {
    return this.db.get<KeypairRow>(sql`${sql.raw(SELECT)} WHERE k.access_key = ${accessKey}`);
  }

  private seal(accessKey: string, secret: string): string {
    return secretBox(this.db).seal(secret, `keypair:${accessKey}`);
  }
}

const SELECT = `SELECT k.access_key, k.user_id, u.name AS user_name, k.secret_sealed, k.is_active, k.created_at, k.rotated_at, k.last_used_at,
  u.role, u.domain FROM keypairs k JOIN users u ON u.id = k.user_id`;

function toKeypair(r: KeypairRow): Keypair {
  return {
    access_key: r.access_key,
    user_id: r.user_id,
    user_name: r.user_name,
    is_active: Number(r.is_active) === 1,
    created_at: r.created_at,
    rotated_at: r.rotated_at,
    last_used_at: r.last_used_at,
  };
}
