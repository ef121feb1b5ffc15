import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { StowageError } from '../../errors.js';
import { PRIVATE_FILE_MODE, restrictFilesSync } from '../../private-files.js';

/**
 * Secrets the control plane must recover (machine secrets, to call agents and mint their peer tokens;
 * registry passwords) are kept sealed in the database: AES-256-GCM under a key that lives in its own 0600
 * file, so a copy of the database alone (a backup, a leaked file) grants nothing. Each value is bound to
 * what it is for (`purpose`, e.g. "machine:agent-1"), so a sealed value moved to another row fails to open.
 *
 *   sbx1.<base64url(iv ‖ tag ‖ ciphertext)>
 */

const PREFIX = 'sbx1.';
const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;

export class SecretBox {
  private constructor(private readonly key: Buffer) {}

  /** The key in `file`, created (32 random bytes, base64, mode 0600) the first time. */
  static fromKeyFile(file: string): SecretBox {
    let text: string | undefined;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (text === undefined) {
      text = `${randomBytes(KEY_BYTES).toString('base64')}\n`;
      writeFileSync(file, text, { mode: PRIVATE_FILE_MODE, flag: 'wx' });
    }
    restrictFilesSync([file]);
    const key = Buffer.from(text.trim(), 'base64');
    if (key.length !== KEY_BYTES) throw new StowageError('BAD_REQUEST', `${file} is not a secrets key (${KEY_BYTES} bytes, base64)`);
    return new SecretBox(key);
  }

  /** A box whose key lives only in this process (in-memory databases). */
  static ephemeral(): SecretBox {
    return new SecretBox(randomBytes(KEY_BYTES));
  }

  static isSealed(stored: string): boolean {
    return stored.startsWith(PREFIX);
  }

  seal(plain: string, purpose: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(Buffer.from(purpose, 'utf8'));
    const body = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
    return PREFIX + Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url');
  }

  /** The plain secret; throws if it was sealed under another key or purpose, or altered. */
  open(stored: string, purpose: string): string {
    if (!SecretBox.isSealed(stored)) throw new StowageError('INTERNAL', `the stored secret for ${purpose} is not sealed`);
    const raw = Buffer.from(stored.slice(PREFIX.length), 'base64url');
    if (raw.length < IV_BYTES + TAG_BYTES) throw new StowageError('INTERNAL', `the stored secret for ${purpose} is damaged`);
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.key, raw.subarray(0, IV_BYTES));
      decipher.setAAD(Buffer.from(purpose, 'utf8'));
      decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
      return Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8');
    } catch (err) {
      throw new StowageError('INTERNAL', `the stored secret for ${purpose} does not open with this control plane's secrets key (was secrets.key replaced?)`, { cause: err });
    }
  }
}
