import { join } from 'node:path';
import { ensurePrivateDir } from '../private-files.js';
import { type KeyPair, issueKeyPair } from './pki.js';
import { writePrivateFile } from './tls-files.js';

/**
 * A client certificate for a person or a tool (the docker CLI with DOCKER_CERT_PATH): ca.pem, cert.pem,
 * key.pem in `outDir`, named as docker expects them.
 */
export async function writeClientCert(ca: KeyPair, opts: { user: string; outDir: string; lifetimeMs: number }): Promise<void> {
  const pair = await issueKeyPair(ca, { name: opts.user, use: 'client', lifetimeMs: opts.lifetimeMs });
  await ensurePrivateDir(opts.outDir);
  await writePrivateFile(join(opts.outDir, 'ca.pem'), ca.certPem);
  await writePrivateFile(join(opts.outDir, 'cert.pem'), pair.certPem);
  await writePrivateFile(join(opts.outDir, 'key.pem'), pair.keyPem);
}
