import { randomUUID } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Readable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import { StowageError } from '../../errors.js';
import { Digester, digestOf, isDigest, verifyContent, type Digest } from '../../oci/digest.js';
import { DEFAULT_READ_LIMIT } from '../../store/content-store.js';
import type { BlobInfo, ByteSource, CommitOptions, ContentStoreApi, ExpectedContent, Ingest, Lease } from '../../store/types.js';
import { LeaseTable } from '../lease-table.js';
import { type ContainerdClient, type WriteMessage, type WriteReply, isGrpcCode, runtimeError } from './client.js';
import type { AgentLease } from './leases.js';

/**
 * containerd's content store as the agent's blob store: /v2/ serves peers from it (Content.Read), transfers
 * and uploads write into it (Content.Write, under the agent's lease, committed with the expected digest), so
 * a layer lives on this machine once. Every byte is hashed here as it is sent and checked before the commit
 * is asked for; containerd checks the digest again on commit.
 *
 * Deleting is containerd's business: content no image (and no lease) references is collected by its own
 * garbage collector, so delete() removes nothing. In-process leases (Lease) still work as the contract says,
 * for the writers that use them.
 */

/** Bytes per Write message: large enough to keep the per-message cost small, well under gRPC limits. */
const CHUNK = 1024 * 1024;

export class ContainerdContentStore implements ContentStoreApi {
  readonly root: string;
  private readonly leases = new LeaseTable();
  /** Live ingests by key: an upload that reopens its key gets the same write stream back. */
  private readonly ingests = new Map<string, ContainerdIngest>();

  constructor(
    private readonly client: ContainerdClient,
    private readonly agentLease: AgentLease,
    root: string,
  ) {
    this.root = resolve(root);
  }

  static async open(client: ContainerdClient, agentLease: AgentLease, root: string): Promise<ContainerdContentStore> {
    await mkdir(root, { recursive: true });
    return new ContainerdContentStore(client, agentLease, root);
  }

  async has(digest: Digest): Promise<boolean> {
    return (await this.stat(digest)) !== undefined;
  }

  async stat(digest: Digest): Promise<BlobInfo | undefined> {
    if (!isDigest(digest)) return undefined;
    const info = await this.client.info(digest);
    return info && { digest, size: info.size };
  }

  async createReadStream(digest: Digest, range?: { start: number; end?: number }): Promise<Readable> {
    const info = await this.stat(digest);
    if (!info) throw new StowageError('BLOB_NOT_FOUND', `blob ${digest} is not in containerd's content store`, { details: { digest } });
    const start = range?.start ?? 0;
    const end = range?.end;
    const valid = Number.isSafeInteger(start) && start >= 0 && start <= info.size && (end === undefined || (Number.isSafeInteger(end) && end >= start));
    if (!valid) {
      throw new StowageError('BAD_REQUEST', `range ${start}-${end ?? ''} not satisfiable for a blob of ${info.size} bytes`, {
        status: 416,
        details: { size: info.size, start, end },
      });
    }
    const last = Math.min(end ?? info.size - 1, info.size - 1);
    if (last < start) return Readable.from([]);
    const call = this.client.read(digest, start, last - start + 1);
    async function* chunks(): AsyncIterable<Buffer> {
      try {
        for await (const msg of call as AsyncIterable<{ data: Buffer }>) if (msg.data.length > 0) yield msg.data;
      } catch (err) {
        throw runtimeError(err, `read of ${digest}`);
      } finally {
        call.cancel();
      }
    }
    return Readable.from(chunks(), { objectMode: false });
  }

  async readBytes(digest: Digest, limit: number = DEFAULT_READ_LIMIT): Promise<Buffer> {
    const info = await this.stat(digest);
    if (!info) throw new StowageError('BLOB_NOT_FOUND', `blob ${digest} is not in containerd's content store`, { details: { digest } });
    if (info.size > limit) {
      throw new StowageError('TOO_LARGE', `blob ${digest} is ${info.size} bytes, more than the ${limit} allowed here`, { details: { size: info.size, limit } });
    }
    const parts: Buffer[] = [];
    for await (const chunk of await this.createReadStream(digest)) parts.push(chunk as Buffer);
    const data = Buffer.concat(parts);
    verifyContent({ digest: digestOf(data), size: data.length }, { digest, size: info.size });
    return data;
  }

  async put(source: ByteSource, expected: ExpectedContent = {}, opts: CommitOptions = {}): Promise<BlobInfo> {
    const ingest = await this.openIngest(`put-${randomUUID()}`);
    try {
      await ingest.write(source);
      return await ingest.commit(expected, opts);
    } catch (err) {
      await ingest.abort().catch(() => undefined);
      throw err;
    }
  }

  putBytes(data: Uint8Array, expected: ExpectedContent = {}, opts: CommitOptions = {}): Promise<BlobInfo> {
    return this.put(Readable.from([Buffer.from(data.buffer, data.byteOffset, data.byteLength)]), expected, opts);
  }

  async openIngest(key: string): Promise<Ingest> {
    if (typeof key !== 'string' || key.length === 0 || key.length > 4096) throw new StowageError('BAD_REQUEST', 'ingest key must be 1..4096 characters');
    const live = this.ingests.get(key);
    if (live) return live;
    const ingest = new ContainerdIngest(key, this.client, await this.agentLease.id(), () => this.ingests.delete(key));
    this.ingests.set(key, ingest);
    return ingest;
  }

  lease(digests: Iterable<Digest> = []): Lease {
    return this.leases.lease(digests);
  }

  isLeased(digest: Digest): boolean {
    return this.leases.isLeased(digest);
  }

  /** containerd collects unreferenced content itself (see the class comment). */
  async delete(_digest: Digest): Promise<boolean> {
    return false;
  }

  async *list(): AsyncIterable<BlobInfo> {
    const call = this.client.listContent();
    try {
      for await (const msg of call as AsyncIterable<{ info: Array<{ digest: string; size: number }> }>) {
        for (const i of msg.info) if (isDigest(i.digest)) yield { digest: i.digest, size: i.size };
      }
    } catch (err) {
      throw runtimeError(err, 'content list');
    }
  }
}

/** One Content.Write stream: opened on the first write, kept open across writes, ended by commit or abort. */
class ContainerdIngest implements Ingest {
  private readonly ref = `stowage-ingest-${randomUUID()}`;
  private readonly digester = new Digester();
  private call: grpc.ClientDuplexStream<WriteMessage, WriteReply> | undefined;
  private failure: Error | undefined;
  private committed: ((reply: { digest: string; offset: number }) => void) | undefined;
  private size = 0;
  private done = false;

  constructor(
    readonly key: string,
    private readonly client: ContainerdClient,
    private readonly leaseId: string,
    private readonly forget: () => void,
  ) {}

  get offset(): number {
    return this.size;
  }

  private stream(): NonNullable<ContainerdIngest['call']> {
    if (this.call) return this.call;
    const call = this.client.write(this.leaseId);
    call.on('data', (reply: { action: string; digest: string; offset: number }) => {
      if (reply.action === 'COMMIT') this.committed?.(reply);
    });
    call.on('error', (err) => {
      this.failure = runtimeError(err, `write of ${this.key}`);
    });
    this.call = call;
    return call;
  }

  private check(): void {
    if (this.done) throw new StowageError('CONFLICT', `ingest ${this.key} is already finished`);
    if (this.failure) throw this.failure;
  }

  private async send(call: NonNullable<ContainerdIngest['call']>, msg: WriteMessage): Promise<void> {
    this.check();
    if (!call.write(msg)) {
      await new Promise<void>((res, rej) => {
        const onDrain = (): void => {
          call.off('error', onError);
          res();
        };
        const onError = (err: Error): void => {
          call.off('drain', onDrain);
          rej(runtimeError(err, `write of ${this.key}`));
        };
        call.once('drain', onDrain);
        call.once('error', onError);
      });
    }
    this.check();
  }

  async write(source: ByteSource): Promise<BlobInfo> {
    this.check();
    const call = this.stream();
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    const flush = async (): Promise<void> => {
      if (pendingBytes === 0) return;
      const data = pending.length === 1 ? pending[0]! : Buffer.concat(pending);
      pending = [];
      pendingBytes = 0;
      const offset = this.size;
      this.digester.update(data);
      this.size += data.length;
      await this.send(call, { action: 'WRITE', ref: this.ref, offset, data });
    };
    for await (const chunk of source as AsyncIterable<Uint8Array>) {
      const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
      pending.push(buf);
      pendingBytes += buf.length;
      if (pendingBytes >= CHUNK) await flush();
    }
    await flush();
    return { digest: this.digester.peek(), size: this.size };
  }

  async commit(expected: ExpectedContent = {}, opts: CommitOptions = {}): Promise<BlobInfo> {
    this.check();
    const call = this.stream();
    const actual: BlobInfo = { digest: this.digester.peek(), size: this.size };
    if (expected.size !== undefined && actual.size < expected.size) {
      await this.abort();
      throw new StowageError('TRUNCATED', `got ${actual.size} of ${expected.size} bytes`, { details: { expected: expected.size, actual: actual.size } });
    }
    try {
      verifyContent(actual, expected);
    } catch (err) {
      await this.abort();
      throw err;
    }
    opts.lease?.add(actual.digest);
    const reply = new Promise<void>((res, rej) => {
      this.committed = () => res();
      call.once('error', (err) => (isGrpcCode(err, grpc.status.ALREADY_EXISTS) ? res() : rej(runtimeError(err, `commit of ${actual.digest}`))));
    });
    reply.catch(() => undefined); // awaited below, unless the send fails first
    try {
      if (this.failure && isGrpcCode(this.failure, grpc.status.ALREADY_EXISTS)) this.failure = undefined;
      await this.send(call, { action: 'COMMIT', ref: this.ref, offset: actual.size, total: actual.size, expected: actual.digest });
      await reply;
    } catch (err) {
      await this.abort();
      throw err;
    }
    this.done = true;
    this.forget();
    call.end();
    return actual;
  }

  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    this.forget();
    this.call?.cancel();
    await this.client.abortWrite(this.ref);
  }
}
