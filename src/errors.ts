/**
 * One error type for the whole system: a stable SCREAMING_SNAKE code that scripts branch on,
 * a human message, and the HTTP status the edge maps it to.
 */
export type ErrorCode =
  | 'INVALID_DIGEST'
  | 'INVALID_REFERENCE'
  | 'INVALID_PLATFORM'
  | 'INVALID_MANIFEST'
  | 'INVALID_ARCHIVE'
  | 'UNSAFE_PATH'
  | 'TOO_LARGE'
  | 'DIGEST_MISMATCH'
  | 'SIZE_MISMATCH'
  | 'TRUNCATED'
  | 'BLOB_NOT_FOUND'
  | 'MANIFEST_NOT_FOUND'
  | 'IMAGE_NOT_FOUND'
  | 'PLATFORM_NOT_FOUND'
  | 'CONFLICT'
  | 'UNSUPPORTED'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'REGISTRY_ERROR'
  | 'BAD_REQUEST'
  | 'OPERATION_NOT_FOUND'
  | 'TRANSFER_NOT_FOUND'
  | 'MACHINE_NOT_FOUND'
  | 'MACHINE_OFFLINE'
  | 'INVENTORY_RESYNC'
  | 'FORBIDDEN'
  | 'AGENT_UNREACHABLE'
  | 'AGENT_ERROR'
  | 'AGENT_PROTOCOL'
  | 'UPLOAD_TIMEOUT'
  | 'INVENTORY_STALE'
  | 'REGISTRY_NOT_FOUND'
  | 'DOMAIN_NOT_FOUND'
  | 'GROUP_NOT_FOUND'
  | 'QUERY_TOO_COMPLEX'
  | 'CANCELLED'
  | 'RUNTIME_UNAVAILABLE'
  | 'RUNTIME_ERROR'
  | 'INSUFFICIENT_STORAGE'
  | 'INTERNAL';

const defaultStatus: Record<ErrorCode, number> = {
  INVALID_DIGEST: 400,
  INVALID_REFERENCE: 400,
  INVALID_PLATFORM: 400,
  INVALID_MANIFEST: 400,
  INVALID_ARCHIVE: 400,
  UNSAFE_PATH: 400,
  TOO_LARGE: 413,
  DIGEST_MISMATCH: 400,
  SIZE_MISMATCH: 400,
  TRUNCATED: 400,
  BLOB_NOT_FOUND: 404,
  MANIFEST_NOT_FOUND: 404,
  IMAGE_NOT_FOUND: 404,
  PLATFORM_NOT_FOUND: 404,
  CONFLICT: 409,
  UNSUPPORTED: 501,
  UNAUTHORIZED: 401,
  DENIED: 403,
  REGISTRY_ERROR: 502,
  BAD_REQUEST: 400,
  OPERATION_NOT_FOUND: 404,
  TRANSFER_NOT_FOUND: 404,
  MACHINE_NOT_FOUND: 404,
  MACHINE_OFFLINE: 409,
  INVENTORY_RESYNC: 409,
  FORBIDDEN: 403,
  AGENT_UNREACHABLE: 502,
  AGENT_ERROR: 502,
  AGENT_PROTOCOL: 502,
  UPLOAD_TIMEOUT: 504,
  INVENTORY_STALE: 504,
  REGISTRY_NOT_FOUND: 404,
  DOMAIN_NOT_FOUND: 404,
  GROUP_NOT_FOUND: 404,
  QUERY_TOO_COMPLEX: 400,
  CANCELLED: 409,
  RUNTIME_UNAVAILABLE: 503,
  RUNTIME_ERROR: 502,
  INSUFFICIENT_STORAGE: 507,
  INTERNAL: 500,
};

export class StowageError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, opts: { status?: number; details?: Record<string, unknown>; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'StowageError';
    this.code = code;
    this.status = opts.status ?? defaultStatus[code];
    this.details = opts.details;
  }

  toJSON(): { code: ErrorCode; message: string; details?: Record<string, unknown> } {
    return this.details ? { code: this.code, message: this.message, details: this.details } : { code: this.code, message: this.message };
  }
}

export function isStowageError(err: unknown, code?: ErrorCode): err is StowageError {
  return err instanceof StowageError && (code === undefined || err.code === code);
}

/** errno codes (and SQLite's) that mean the disk or the quota is full: retrying without freeing space cannot help. */
const STORAGE_FULL_CODES = new Set(['ENOSPC', 'EDQUOT', 'SQLITE_FULL']);

export function isStorageFull(err: unknown): boolean {
  if (isStowageError(err, 'INSUFFICIENT_STORAGE')) return true;
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'string' && STORAGE_FULL_CODES.has(code);
}

/**
 * A full disk as INSUFFICIENT_STORAGE (HTTP 507) with a message saying so; any other error unchanged.
 * `where` names what was being written ("the image store", "the control plane's database").
 */
export function storageFullOr(err: unknown, where = 'the image store'): unknown {
  if (!isStorageFull(err) || isStowageError(err)) return err;
  const code = (err as { code: string }).code;
  return new StowageError('INSUFFICIENT_STORAGE', `no space left on the disk holding ${where} (${code}); nothing was kept: free space and retry`, { cause: err });
}
