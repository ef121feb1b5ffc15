/** The secret part of a join token: what precedes its CA pin ("sjt_…@sha256:<fingerprint>"), if any. */
export function parseJoinSecret(token: string): string {
  const at = token.indexOf('@');
  return at < 0 ? token : token.slice(0, at);
}
