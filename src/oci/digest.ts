import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { StowageError } from '../errors.js';

/** A validated content digest. Only sha256 is accepted: it is what every registry and Docker use. */
export type Digest = `sha256:${string}`;

const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

export function isDigest(value: unknown): value is Digest {
  return typeof value === 'string' && DIGEST_RE.test(value);
}

export function parseDigest(value: string): Digest {
  if (!isDigest(value)) {
    const shown = value.length > 80 ? `${value.slice(0, 80)}…` : value;
    throw new StowageError('INVALID_DIGEST', `invalid digest "${shown}": expected sha256:<64 lowercase hex>`);
  }
  return value;
}

/** The 64-hex part of a digest, used for file names. */
export function digestHex(digest: Digest): string {
  return digest.slice('sha256:'.length);
}

export function digestOf(data: Uint8Array | string): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** Incremental hasher that also counts bytes. */
export class Digester {
  private readonly hash: Hash = createHash('sha256');
  private count = 0;

  update(chunk: Uint8Array): void {
    this.hash.update(chunk);
    this.count += chunk.byteLength;
  }

  get size(): number {
    return this.count;
  }

  /** The digest of what was hashed so far, leaving the hash open for more. */
  peek(): Digest {
    return `sha256:${this.hash.copy().digest('hex')}`;
  }

  /** Finalises the hash; call once. */
  digest(): Digest {
    return `sha256:${this.hash.digest('hex')}`;
  }
}

/** A pass-through stream that hashes what flows through it; read `result` after 'finish'. */
export class DigestingStream extends Transform {
  private readonly digester = new Digester();
  private finalDigest: Digest | undefined;

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.digester.update(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    this.finalDigest = this.digester.digest();
    cb();
  }

  get result(): { digest: Digest; size: number } {
    if (!this.finalDigest) throw new StowageError('INTERNAL', 'digest read before the stream finished');
    return { digest: this.finalDigest, size: this.digester.size };
  }
}

/** Throws DIGEST_MISMATCH / SIZE_MISMATCH when the received bytes are not what was promised. */
export function verifyContent(
  actual: { digest: Digest; size: number },
  expected: { digest?: Digest | undefined; size?: number | undefined },
): void {
  if (expected.size !== undefined && expected.size !== actual.size) {
    throw new StowageError('SIZE_MISMATCH', `size mismatch: expected ${expected.size} bytes, got ${actual.size}`, {
      details: { expected: expected.size, actual: actual.size },
    });
  }
  if (expected.digest !== undefined && expected.digest !== actual.digest) {
    throw new StowageError('DIGEST_MISMATCH', `digest mismatch: expected ${expected.digest}, got ${actual.digest}`, {
      details: { expected: expected.digest, actual: actual.digest },
    });
  }
}

/** The 12-hex short form Docker shows for image IDs and layers; takes a digest or bare hex. */
export function shortId(id: string): string {
  return (id.startsWith('sha256:') ? id.slice('sha256:'.length) : id).slice(0, 12);
}
