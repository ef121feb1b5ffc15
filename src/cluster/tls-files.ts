import { randomBytes } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { StowageError } from '../errors.js';
import { ensurePrivateDir } from '../private-files.js';
import { type KeyPair, certificateExpiry, certificateFingerprint, createCa, issueKeyPair } from './pki.js';

/**
 * Where the TLS material lives. A control plane's data directory after `stowd init`:
 *   tls/ca.pem, tls/ca.key          the cluster CA
 *   tls/control.pem, tls/control.key the control plane's certificate (server and client)
 *   join.token                       sjt_…@sha256:<CA fingerprint>
 * An agent's data directory, once joined over TLS: tls/ca.pem, tls/machine.pem, tls/machine.key.
 * Directories 0700, files 0600.
 */

export const JOIN_TOKEN_PIN = '@sha256:';
const CONTROL_CERT_LIFETIME_MS = 365 * 24 * 3600 * 1000;

export function tlsDir(dataDir: string): string {
  return join(dataDir, 'tls');
}

/** Written beside, fsynced by the rename's atomicity: a reader sees the old file or the new one. */
export async function writePrivateFile(path: string, text: string): Promise<void> {
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, text, { mode: 0o600, flag: 'wx' });
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** A text file's contents, or undefined when it does not exist. */
export async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** A join token split into the secret the control plane checks and the CA fingerprint the agent pins. */
export function parseJoinToken(token: string): { secret: string; caFingerprint: string | undefined } {
  const at = token.indexOf(JOIN_TOKEN_PIN);
  if (at < 0) return { secret: token, caFingerprint: undefined };
  const fp = token.slice(at + JOIN_TOKEN_PIN.length).toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(fp)) throw new StowageError('BAD_REQUEST', 'the join token pins no valid CA fingerprint (…@sha256:<64 hex digits>)');
  return { secret: token.slice(0, at), caFingerprint: fp };
}

/** The control plane's TLS material, as node:tls takes it. */
export interface ControlTls {
  ca: KeyPair;
  server: KeyPair;
  caFingerprint: string;
}

/** True once `stowd init` has made a CA in this data directory. */
export async function hasClusterCa(dataDir: string): Promise<boolean> {
  return (await readOptional(join(tlsDir(dataDir), 'ca.pem'))) !== undefined;
}

/** Names the control plane's certificate is valid for when nothing else is said. */
export function defaultControlNames(): string[] {
  return ['localhost', '127.0.0.1', '::1', hostname()];
}

async function writeControlCert(dir: string, ca: KeyPair, altNames: readonly string[]): Promise<KeyPair> {
  const server = await issueKeyPair(ca, { name: 'control-plane', altNames, use: 'both', lifetimeMs: CONTROL_CERT_LIFETIME_MS });
  await writePrivateFile(join(dir, 'control.key'), server.keyPem);
  await writePrivateFile(join(dir, 'control.pem'), server.certPem);
  await writePrivateFile(join(dir, 'control.names'), `${JSON.stringify(altNames)}\n`);
  return server;
}

/**
 * `stowd init`: the CA, the control plane's certificate and a join token pinning the CA. Refuses a
 * directory that already has a CA: replacing it would cut every machine off.
 */
export async function initCluster(dataDir: string, altNames: readonly string[]): Promise<{ joinToken: string; caFingerprint: string; caFile: string }> {
  const dir = tlsDir(dataDir);
  if (await hasClusterCa(dataDir)) throw new StowageError('CONFLICT', `${dir}/ca.pem exists: this cluster is initialised already (its CA is kept)`);
  await ensurePrivateDir(dataDir);
  await ensurePrivateDir(dir);
  const ca = await createCa();
  await writePrivateFile(join(dir, 'ca.key'), ca.keyPem);
  await writePrivateFile(join(dir, 'ca.pem'), ca.certPem);
  await writeControlCert(dir, ca, altNames);
  const caFingerprint = certificateFingerprint(ca.certPem);
  const tokenFile = join(dataDir, 'join.token');
  const previous = (await readOptional(tokenFile))?.trim();
  const secret = previous ? parseJoinToken(previous).secret : `sjt_${randomBytes(24).toString('base64url')}`;
  const joinToken = `${secret}${JOIN_TOKEN_PIN}${caFingerprint}`;
  await writePrivateFile(tokenFile, `${joinToken}\n`);
  return { joinToken, caFingerprint, caFile: join(dir, 'ca.pem') };
}

/** True when less than a third of the certificate's lifetime is left: time to get a new one. */
export function dueForRenewal(certPem: string, now = Date.now()): boolean {
  const { notBefore, notAfter } = certificateExpiry(certPem);
  return now >= notBefore.getTime() + ((notAfter.getTime() - notBefore.getTime()) * 2) / 3;
}

/** The CA (with its key) of an initialised data directory. */
export async function readCa(dataDir: string): Promise<KeyPair> {
  const dir = tlsDir(dataDir);
  const [certPem, keyPem] = await Promise.all([readOptional(join(dir, 'ca.pem')), readOptional(join(dir, 'ca.key'))]);
  if (!certPem || !keyPem) throw new StowageError('BAD_REQUEST', `${dir} holds no cluster CA: run \`stowd init --dir ${dataDir}\` first`);
  return { certPem, keyPem };
}

/** The control plane's TLS material; its own certificate is renewed here when due (it holds the CA). */
export async function loadControlTls(dataDir: string): Promise<ControlTls> {
  const dir = tlsDir(dataDir);
  await ensurePrivateDir(dir);
  const ca = await readCa(dataDir);
  const certPem = await readOptional(join(dir, 'control.pem'));
  const keyPem = await readOptional(join(dir, 'control.key'));
  let server: KeyPair;
  if (certPem && keyPem && !dueForRenewal(certPem)) {
    server = { certPem, keyPem };
  } else {
    const names = await readOptional(join(dir, 'control.names'));
    server = await writeControlCert(dir, ca, names ? (JSON.parse(names) as string[]) : defaultControlNames());
  }
  return { ca, server, caFingerprint: certificateFingerprint(ca.certPem) };
}
