import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { StowageError } from '../../errors.js';
import type { Principal } from '../auth/api-keys.js';

/**
 * Backend.AI's request signing, checked as its manager checks it. The client sends
 *   Authorization: BackendAI signMethod=HMAC-SHA256, credential=<access key>:<signature>
 *   Date (or X-BackendAI-Date): an ISO 8601 time, e.g. 2026-12-02T16:29:08.123456+00:00
 *   X-BackendAI-Version: v7.20230615
 * and signs, with a key derived from the secret key, the date (as written in the header's own offset)
 * and the Host:
 *   key = HMAC(HMAC(secret, "YYYYMMDD"), host)
 *   signature = hex HMAC(key, "METHOD\n<path?query>\n<Date header>\nhost:<host>\ncontent-type:<type>\n
 *                               x-backendai-version:<version>\n<hex hash of the empty string>")
 * Since API v4.20181215 the body is not part of the signature (the hash is always of b""), so the
 * whole check runs on the request line and headers, before the body is read. Older versions hashed
 * the body; they are refused. The date may be off by at most MAX_SKEW_MS either way.
 */

/** The API version this server speaks (GET / answers it; Backend.AI 23.09's). */
export const API_VERSION = 'v7.20230615';
const FIRST_UNSIGNED_BODY = { major: 4, date: 20181215 };
export const MAX_SKEW_MS = 15 * 60 * 1000;
const HASHES: Readonly<Record<string, string>> = { sha256: 'sha256', sha384: 'sha384', sha512: 'sha512', sha1: 'sha1' };

export interface SignedRequestLine {
  method: string;
  /** The raw request target: path and query exactly as sent. */
  url: string;
  headers: IncomingHttpHeaders;
}

export type CredentialLookup = (accessKey: string) => Promise<{ principal: Principal; secret: string } | undefined>;

/** Does the request carry Backend.AI's signature (rather than a bearer token)? */
export function isSignedRequest(headers: IncomingHttpHeaders): boolean {
  return /^BackendAI\s/.test(headers.authorization ?? '');
}

function refuse(message: string): StowageError {
  return new StowageError('UNAUTHORIZED', message);
}

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** The signing parameters of the Authorization header: sign method, access key, signature. */
function authParams(value: string): { method: string; accessKey: string; signature: string } {
  const params = new Map<string, string>();
  for (const part of value.replace(/^BackendAI\s+/, '').split(',')) {
    const eq = part.indexOf('=');
    if (eq > 0) params.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  const credential = params.get('credential') ?? '';
  const colon = credential.indexOf(':');
  const method = params.get('signMethod');
  if (!method || colon <= 0) throw refuse('malformed Authorization header: expected BackendAI signMethod=HMAC-SHA256, credential=<access key>:<signature>');
  return { method, accessKey: credential.slice(0, colon), signature: credential.slice(colon + 1) };
}

/** The signing date: its instant (for the skew check) and YYYYMMDD as the header writes it (for the key). */
function signingDate(raw: string): { at: number; day: string } {
  const iso = /^(\d{4})-(\d{2})-(\d{2})T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?$/.exec(raw);
  if (iso) {
    // Without an offset the time is UTC, as Backend.AI's manager assumes.
    const at = Date.parse(iso[4] ? raw : `${raw}Z`);
    if (Number.isNaN(at)) throw refuse(`unreadable date "${raw.slice(0, 64)}"`);
    return { at, day: `${iso[1]}${iso[2]}${iso[3]}` };
  }
  const at = /GMT$/.test(raw) ? Date.parse(raw) : Number.NaN;
  if (Number.isNaN(at)) throw refuse(`unreadable date "${raw.slice(0, 64)}": ISO 8601 or an HTTP date`);
  return { at, day: new Date(at).toISOString().slice(0, 10).replaceAll('-', '') };
}

function versionParts(v: string): { major: number; date: number } | undefined {
  const m = /^v(\d{1,3})\.(\d{8})$/.exec(v);
  return m ? { major: Number(m[1]), date: Number(m[2]) } : undefined;
}

/** The content type as Backend.AI's manager reads it: the media type alone, octet-stream when absent. */
function contentType(headers: IncomingHttpHeaders): string {
  const raw = header(headers, 'content-type');
  return raw ? (raw.split(';')[0] ?? '').trim().toLowerCase() : 'application/octet-stream';
}

/** The signature Backend.AI's client computes for this request with this secret. */
export function expectedSignature(req: SignedRequestLine, secret: string, hash = 'sha256'): string {
  const rawDate = header(req.headers, 'date') ?? header(req.headers, 'x-backendai-date') ?? '';
  const host = header(req.headers, 'host') ?? '';
  const version = header(req.headers, 'x-backendai-version') ?? '';
  const { day } = signingDate(rawDate);
  const bodyHash = createHash(hash).update('').digest('hex');
  const text = `${req.method.toUpperCase()}\n${req.url}\n${rawDate}\nhost:${host}\ncontent-type:${contentType(req.headers)}\nx-backendai-version:${version}\n${bodyHash}`;
  const dayKey = createHmac(hash, secret).update(day).digest();
  const key = createHmac(hash, dayKey).update(host).digest();
  return createHmac(hash, key).update(text).digest('hex');
}

/**
 * Checks a signed request; the caller on success, UNAUTHORIZED (saying why) otherwise. `lookup` finds
 * the access key's owner and secret (an unknown or inactive key reads as a wrong signature).
 */
export async function verifySignedRequest(
  req: SignedRequestLine,
  lookup: CredentialLookup,
  now = Date.now(),
): Promise<{ principal: Principal; accessKey: string }> {
  const { method, accessKey, signature } = authParams(header(req.headers, 'authorization') ?? '');
  const [mac, hashName] = method.toLowerCase().split('-');
  const hash = HASHES[hashName ?? ''];
  if (mac !== 'hmac' || !hash) throw refuse(`unsupported signMethod "${method.slice(0, 32)}": use HMAC-SHA256`);
  const rawDate = header(req.headers, 'date') ?? header(req.headers, 'x-backendai-date');
  if (!rawDate) throw refuse('a signed request needs a Date or X-BackendAI-Date header');
  const { at } = signingDate(rawDate);
  if (Math.abs(now - at) > MAX_SKEW_MS) throw refuse(`the request date ${rawDate.slice(0, 64)} is more than ${MAX_SKEW_MS / 60_000} minutes from the server's clock`);
  const version = versionParts(header(req.headers, 'x-backendai-version') ?? '');
  if (!version) throw refuse('a signed request needs X-BackendAI-Version (vN.YYYYMMDD)');
  if (version.major < FIRST_UNSIGNED_BODY.major || (version.major === FIRST_UNSIGNED_BODY.major && version.date < FIRST_UNSIGNED_BODY.date)) {
    throw refuse(`API versions before v4.20181215 sign the request body; this server speaks ${API_VERSION}`);
  }
  const found = await lookup(accessKey);
  const expected = found ? expectedSignature(req, found.secret, hash) : '';
  const given = Buffer.from(signature);
  if (!found || given.length !== expected.length || !timingSafeEqual(given, Buffer.from(expected))) {
    throw refuse('the signature does not match (unknown access key, wrong secret, or a request changed in transit)');
  }
  return { principal: found.principal, accessKey };
}
