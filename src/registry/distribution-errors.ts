import type { FastifyReply } from 'fastify';

/** Error codes of the OCI distribution spec (plus UNKNOWN), as the `{errors:[{code,message}]}` body carries them. */
export type DistributionCode =
  | 'BLOB_UNKNOWN'
  | 'BLOB_UPLOAD_INVALID'
  | 'BLOB_UPLOAD_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_BLOB_UNKNOWN'
  | 'MANIFEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'NAME_INVALID'
  | 'NAME_UNKNOWN'
  | 'SIZE_INVALID'
  | 'TAG_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'UNSUPPORTED'
  | 'TOOMANYREQUESTS'
  | 'RANGE_INVALID'
  | 'PAGINATION_NUMBER_INVALID'
  /** Not in the spec: the agent's disk is full (HTTP 507); clients print code and message as for any other. */
  | 'INSUFFICIENT_STORAGE'
  | 'UNKNOWN'
  // Stowage's own, for a machine whose container runtime is the blob store and fails.
  | 'RUNTIME_UNAVAILABLE'
  | 'RUNTIME_ERROR';

/** Stowage's error code and message of a failed answer, as headers (a HEAD answer has no body). */
export const STOWAGE_ERROR_HEADER = 'stowage-error-code';
export const STOWAGE_MESSAGE_HEADER = 'stowage-error-message';

/** Printable ASCII only, bounded: fit for a header value. */
export function headerSafe(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, ' ').slice(0, 500);
}

export function sendError(reply: FastifyReply, status: number, code: DistributionCode, message: string, detail?: unknown): FastifyReply {
  const err: Record<string, unknown> = { code, message };
  if (detail !== undefined) err['detail'] = detail;
  return reply.code(status).type('application/json; charset=utf-8').send({ errors: [err] });
}

/** `bytes` as the Range header of an upload reports it: the inclusive span received so far ("0-0" for none). */
export function uploadRange(bytes: number): string {
  return `0-${Math.max(0, bytes - 1)}`;
}
