/**
 * Who pulls from whom when one image goes to many machines: a chain. The first target pulls from the
 * source; every other target takes its blobs from the target before it, which serves them from its /v2/
 * while they still arrive (store/live-blobs.ts). So every machine uploads about one copy, whatever N is,
 * and the last target finishes about one copy's time (plus a small delay per hop) after the first starts.
 *
 * Why a chain and not a tree: the limit is each machine's uplink. In a tree of degree d, an inner node
 * sends d copies through one uplink and so takes d times as long; a chain keeps every uplink busy with one
 * copy. A hop costs only the time to fetch a manifest and a config, and a blob's final byte (held back
 * until the machine upstream has verified the blob).
 *
 * A target starts once the one before it has announced the blobs it will fetch (its first progress with a
 * total, or for a push the control plane's announcement, see push-fanout.ts) or has ended, so that what it
 * asks for is known upstream. Its request lists its peers: every
 * target before it that has not failed, nearest first; manifests always come from the source, which is
 * also the last resort for blobs. If a peer dies or stalls, the agent passes over it to the next one and
 * resumes from the bytes it has (Range). Renewed requests (token renewal) carry a peer list rebuilt
 * from what is known then, so a dead machine drops out of it.
 */

type Outcome = 'running' | 'holder' | 'failed';

/**
 * Peers named in one transfer request, nearest first. A blob comes from the first that has it; the rest
 * are fallbacks for a peer that dies or stalls. Naming every target before it (up to N-1, each with a
 * peer token of its own) would make planning a distribute to N machines cost N² tokens.
 */
export const MAX_PEERS_PER_TARGET = 8;

interface Link {
  outcome: Outcome;
  ready: Promise<void>;
  markReady: () => void;
}

export class FanoutChain {
  private readonly links = new Map<string, Link>();
  private readonly order: readonly string[];
  private readonly position = new Map<string, number>();

  constructor(targets: readonly string[]) {
    this.order = targets;
    targets.forEach((id, i) => this.position.set(id, i));
    for (const id of targets) {
      let markReady!: () => void;
      const ready = new Promise<void>((resolve) => (markReady = resolve));
      this.links.set(id, { outcome: 'running', ready, markReady });
    }
  }

  /** Resolves once the target before `id` has announced what it fetches, or has ended (at once for the first). */
  async upstreamReady(id: string): Promise<void> {
    const i = this.position.get(id) ?? -1;
    const before = i > 0 ? this.links.get(this.order[i - 1] as string) : undefined;
    await before?.ready;
  }

  /** The target knows which blobs it will fetch and has announced them: the next one may start. */
  started(id: string): void {
    this.links.get(id)?.markReady();
  }

  /** The target ended: as a holder of the image (present or skipped_present) or failed. */
  ended(id: string, holder: boolean): void {
    const link = this.links.get(id);
    if (!link) return;
    link.outcome = holder ? 'holder' : 'failed';
    link.markReady();
  }

  /** The targets before `id` that hold the image or are receiving it, nearest first (MAX_PEERS_PER_TARGET at most). */
  peersOf(id: string): string[] {
    const i = this.position.get(id) ?? -1;
    const out: string[] = [];
    for (let j = i - 1; j >= 0 && out.length < MAX_PEERS_PER_TARGET; j--) {
      const peer = this.order[j] as string;
      if (this.links.get(peer)?.outcome !== 'failed') out.push(peer);
    }
    return out;
  }
}
