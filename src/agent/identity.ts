import { randomBytes } from 'node:crypto';
import { open, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { StowageError } from '../errors.js';

/** What joining a control plane gave this machine, kept in <dataDir>/identity.json (mode 0600). */
export const identitySchema = z.object({
  control_url: z.string().min(1),
  machine_id: z.string().min(1),
  machine_secret: z.string().min(1),
});
export type Identity = z.infer<typeof identitySchema>;

export function identityPath(dataDir: string): string {
  return join(dataDir, 'identity.json');
}

/** The stored identity, or undefined when the machine never joined. A damaged file is an error, not a rejoin. */
export async function readIdentity(dataDir: string): Promise<Identity | undefined> {
  const path = identityPath(dataDir);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const result = identitySchema.safeParse(parsed);
  if (!result.success) throw new StowageError('BAD_REQUEST', `${path} is not a valid machine identity; remove it to join again`);
  return result.data;
}

/** Written to a temp file (0600), fsynced, renamed: a crash leaves the old identity or the new one. */
export async function writeIdentity(dataDir: string, identity: Identity): Promise<void> {
  const path = identityPath(dataDir);
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(`${JSON.stringify(identity, null, 2)}\n`);
    await fh.sync();
  } catch (err) {
    await fh.close();
    await rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  await rename(tmp, path);
}
