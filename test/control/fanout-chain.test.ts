import { describe, expect, it } from 'vitest';
import { FanoutChain, MAX_PEERS_PER_TARGET } from '../../src/control/operations/fanout.js';

/** The fan-out plan: each target's peers are the targets before it, nearest first, a bounded number. */

describe('FanoutChain', () => {
  it('names the nearest targets before one as its peers, skipping failed ones, at most MAX_PEERS_PER_TARGET', () => {
    const ids = Array.from({ length: 1000 }, (_, i) => `m${i}`);
    const chain = new FanoutChain(ids);
    expect(chain.peersOf('m0')).toEqual([]);
    expect(chain.peersOf('m3')).toEqual(['m2', 'm1', 'm0']);
    chain.ended('m998', false);
    const last = chain.peersOf('m999');
    expect(last).toHaveLength(MAX_PEERS_PER_TARGET);
    expect(last[0]).toBe('m997');
    expect(last).not.toContain('m998');
    expect(last.at(-1)).toBe(`m${997 - MAX_PEERS_PER_TARGET + 1}`);
  });

  it('lets a target start once the one before it has started or ended', async () => {
    const chain = new FanoutChain(['a', 'b', 'c']);
    await chain.upstreamReady('a');
    let bReady = false;
    const b = chain.upstreamReady('b').then(() => (bReady = true));
    await Promise.resolve();
    expect(bReady).toBe(false);
    chain.started('a');
    await b;
    expect(bReady).toBe(true);
    chain.ended('b', false);
    await chain.upstreamReady('c');
  });
});
