import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import { ulid } from 'ulid';
import { StowageError } from '../../errors.js';
import { type Db, isUniqueViolation, nowIso } from '../db/database.js';
import { newSecret } from '../peer-token.js';

export type Role = 'superadmin' | 'admin' | 'user';

/** Who is calling: a user with a role (and for non-superadmins, a domain that scopes what they see). */
export interface Principal {
  userId: string;
  name: string;
  role: Role;
  domain: string | null;
  /** The API key it authenticated with (see keyId). */
  keyId?: string;
}

function hashKey(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export async function createUser(db: Db, user: { name: string; role: Role; domain?: string | null }): Promise<Principal> {
  const id = `u-${ulid()}`;
  try {
    await db.run(sql`INSERT INTO users (id, name, role, domain, created_at) VALUES (${id}, ${user.name}, ${user.role}, ${user.domain ?? null}, ${nowIso()})`);
  } catch (err) {
    if (isUniqueViolation(err)) throw new StowageError('CONFLICT', `user ${user.name} exists`);
    throw err;
  }
  return { userId: id, name: user.name, role: user.role, domain: user.domain ?? null };
}

/** An API key's public ID: the start of its hash, safe to show and to name the key by (e.g. to revoke it). */
export function keyId(token: string): string {
  return hashKey(token).slice(0, 16);
}

/**
 * Deletes the API key named by the key itself or by its ID; it authenticates nothing from the next request
 * on. Returns its ID and owner, or undefined when no key matches.
 */
export async function revokeApiKey(db: Db, keyOrId: string): Promise<{ keyId: string; userId: string } | undefined> {
  const id = keyOrId.startsWith('stk_') ? keyId(keyOrId) : keyOrId;
  if (!/^[0-9a-f]{16}$/.test(id)) return undefined;
  const row = await db.get<{ user_id: string }>(sql`DELETE FROM api_keys WHERE substr(key_hash, 1, 16) = ${id} RETURNING user_id`);
  return row ? { keyId: id, userId: row.user_id } : undefined;
}

/** A new API key for the user; the token is returned once and only its hash is kept. */
export async function createApiKey(db: Db, userId: string, token = newSecret('stk_')): Promise<string> {
  await db.run(sql`INSERT INTO api_keys (key_hash, user_id, created_at) VALUES (${hashKey(token)}, ${userId}, ${nowIso()})`);
  return token;
}

export async function authenticateApiKey(db: Db, token: string): Promise<Principal | undefined> {
  if (!token.startsWith('stk_') || token.length > 256) return undefined;
  const row = await db.get<{ id: string; name: string; role: Role; domain: string | null }>(
    sql`SELECT u.id, u.name, u.role, u.domain FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.key_hash = ${hashKey(token)}`,
  );
  return row ? { userId: row.id, name: row.name, role: row.role, domain: row.domain, keyId: keyId(token) } : undefined;
}

export async function userByName(db: Db, name: string): Promise<Principal | undefined> {
  const row = await db.get<{ id: string; name: string; role: Role; domain: string | null }>(sql`SELECT id, name, role, domain FROM users WHERE name = ${name}`);
  return row ? { userId: row.id, name: row.name, role: row.role, domain: row.domain } : undefined;
}

/** The bearer token of an Authorization header, or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  const m = /^Bearer\s+(\S+)$/i.exec(header ?? '');
  return m?.[1];
}
