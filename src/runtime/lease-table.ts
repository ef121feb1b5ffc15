import { StowageError } from '../errors.js';
import { type Digest, isDigest } from '../oci/digest.js';
import type { Lease } from '../store/types.js';

/** In-process leases (see Lease in store/types.ts) for a store whose blobs live in a runtime. */
export class LeaseTable {
  private readonly counts = new Map<Digest, number>();

  lease(digests: Iterable<Digest> = []): Lease {
    const counts = this.counts;
    const held = new Set<Digest>();
    let released = false;
    const lease: Lease = {
      add(digest) {
        if (released) throw new StowageError('INTERNAL', `cannot lease ${digest}: the lease was already released`);
        if (!isDigest(digest)) throw new StowageError('INVALID_DIGEST', `invalid digest "${String(digest).slice(0, 80)}"`);
        if (held.has(digest)) return;
        held.add(digest);
        counts.set(digest, (counts.get(digest) ?? 0) + 1);
      },
      has: (digest) => held.has(digest),
      release() {
        if (released) return;
        released = true;
        for (const d of held) {
          const n = (counts.get(d) ?? 1) - 1;
          if (n > 0) counts.set(d, n);
          else counts.delete(d);
        }
        held.clear();
      },
    };
    for (const d of digests) lease.add(d);
    return lease;
  }

  isLeased(digest: Digest): boolean {
    return this.counts.has(digest);
  }
}
