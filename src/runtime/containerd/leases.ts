import { randomUUID } from 'node:crypto';
import type { ContainerdClient } from './client.js';

/**
 * The containerd lease this agent writes under. containerd collects content and snapshots that no image
 * and no lease references, so everything a transfer writes — blobs as they are committed, snapshots as
 * layers are unpacked — is written under a lease until the image record names it. Rather than one lease
 * per writer (whose lifetime would have to follow every Stowage writer), the agent writes under one lease
 * that expires on its own (`containerd.io/gc.expire`) and is replaced well before: what a transfer wrote
 * stays protected for at least RENEW_MS + margin, long after its image record exists, and a crashed agent
 * leaks nothing for longer than EXPIRE_MS.
 */

const EXPIRE_MS = 6 * 60 * 60_000;
const RENEW_MS = 60 * 60_000;

export class AgentLease {
  private current: { id: string; createdAt: number; ready: Promise<string> } | undefined;

  constructor(private readonly client: ContainerdClient) {}

  /** The lease to write under now (created in containerd on first use and after each renewal period). */
  id(): Promise<string> {
    const now = Date.now();
    if (this.current && now - this.current.createdAt < RENEW_MS) return this.current.ready;
    const id = `stowage-${randomUUID()}`;
    const expire = new Date(now + EXPIRE_MS).toISOString().replace(/\.\d+Z$/, 'Z');
    const ready = this.client.createLease(id, { 'containerd.io/gc.expire': expire }).then(() => id);
    const entry = { id, createdAt: now, ready };
    this.current = entry;
    // A failed create (containerd down) is retried by the next caller, not remembered.
    ready.catch(() => {
      if (this.current === entry) this.current = undefined;
    });
    return ready;
  }
}
