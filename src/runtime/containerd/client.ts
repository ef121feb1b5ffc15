import * as grpc from '@grpc/grpc-js';
import { fromJSON } from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import { StowageError } from '../../errors.js';
import { CONTAINERD_PROTOS } from './protos.js';

/**
 * A small gRPC client for containerd's API: one channel to the socket, every call in one namespace (the
 * `containerd-namespace` header) and, when given, under a lease (`containerd-lease`). Errors become
 * StowageErrors: a socket that is missing or stops answering is RUNTIME_UNAVAILABLE, anything else
 * containerd refuses is RUNTIME_ERROR (NOT_FOUND and ALREADY_EXISTS keep their gRPC code in details).
 */

export interface Descriptor {
  media_type: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export interface Mount {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

export interface ContentInfo {
  digest: string;
  size: number;
  labels: Record<string, string>;
}

export interface ContainerdImage {
  name: string;
  labels: Record<string, string>;
  target: Descriptor;
}

export interface WriteMessage {
  action: 'STAT' | 'WRITE' | 'COMMIT';
  ref?: string;
  total?: number;
  expected?: string;
  offset?: number;
  data?: Buffer;
}

export interface WriteReply {
  action: string;
  offset: number;
  total: number;
  digest: string;
}

type Unary = (req: unknown, md: grpc.Metadata, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void;
type ServerStream = (req: unknown, md: grpc.Metadata) => grpc.ClientReadableStream<unknown>;
type Duplex = (md: grpc.Metadata) => grpc.ClientDuplexStream<unknown, unknown>;
type ServiceClient = grpc.Client & Record<string, unknown>;
type ServiceCtor = new (address: string, creds: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => ServiceClient;

let definitions: grpc.GrpcObject | undefined;

/** Parses the hand-written protos once (with the well-known google types they import). */
function services(): grpc.GrpcObject {
  if (definitions) return definitions;
  const root = new protobuf.Root();
  for (const name of ['google/protobuf/empty.proto', 'google/protobuf/field_mask.proto', 'google/protobuf/any.proto', 'google/protobuf/timestamp.proto']) {
    const json = protobuf.common.get(name);
    if (json) root.addJSON(json.nested ?? {});
  }
  for (const source of Object.values(CONTAINERD_PROTOS)) protobuf.parse(source, root, { keepCase: true });
  const pkg = fromJSON(root.toJSON(), { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true });
  definitions = grpc.loadPackageDefinition(pkg);
  return definitions;
}

function serviceCtor(path: string): ServiceCtor {
  let node: unknown = services();
  for (const part of path.split('.')) node = (node as Record<string, unknown>)[part];
  return node as ServiceCtor;
}

const MAX_MESSAGE = 32 * 1024 * 1024;
/** How long a call that met a disconnected channel waits for containerd to be reachable again. */
const RECONNECT_MS = 5_000;

/** gRPC status → a StowageError saying the runtime is the trouble. */
export function runtimeError(err: unknown, what: string): StowageError {
  if (err instanceof StowageError) return err;
  const e = err as Partial<grpc.ServiceError>;
  const grpcCode = typeof e.code === 'number' ? e.code : undefined;
  const detail = e.details ?? (err instanceof Error ? err.message : String(err));
  if (grpcCode === grpc.status.UNAVAILABLE || grpcCode === grpc.status.DEADLINE_EXCEEDED || grpcCode === grpc.status.CANCELLED) {
    return new StowageError('RUNTIME_UNAVAILABLE', `containerd is not answering (${what}): ${detail}`, { details: { grpc_code: grpcCode } });
  }
  return new StowageError('RUNTIME_ERROR', `containerd refused ${what}: ${detail}`, { details: { grpc_code: grpcCode ?? -1 } });
}

export function isGrpcCode(err: unknown, code: grpc.status): boolean {
  if (err instanceof StowageError) return err.details?.['grpc_code'] === code;
  return (err as Partial<grpc.ServiceError>).code === code;
}

export class ContainerdClient {
  private readonly content: ServiceClient;
  private readonly imagesSvc: ServiceClient;
  private readonly leasesSvc: ServiceClient;
  private readonly eventsSvc: ServiceClient;
  private readonly snapshotsSvc: ServiceClient;
  private readonly diffSvc: ServiceClient;

  constructor(
    readonly socket: string,
    readonly namespace: string,
  ) {
    const address = `unix://${socket}`;
    const creds = grpc.credentials.createInsecure();
    const options: grpc.ChannelOptions = {
      'grpc.max_receive_message_length': MAX_MESSAGE,
      'grpc.max_send_message_length': MAX_MESSAGE,
      // containerd is local: a dead socket should fail calls quickly, not after minutes of backoff.
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 2000,
    };
    this.content = new (serviceCtor('containerd.services.content.v1.Content'))(address, creds, options);
    // Clients with the same address and options share grpc-js's subchannel: one connection.
    const shared = options;
    this.imagesSvc = new (serviceCtor('containerd.services.images.v1.Images'))(address, creds, shared);
    this.leasesSvc = new (serviceCtor('containerd.services.leases.v1.Leases'))(address, creds, shared);
    this.eventsSvc = new (serviceCtor('containerd.services.events.v1.Events'))(address, creds, shared);
    this.snapshotsSvc = new (serviceCtor('containerd.services.snapshots.v1.Snapshots'))(address, creds, shared);
    this.diffSvc = new (serviceCtor('containerd.services.diff.v1.Diff'))(address, creds, shared);
  }

  metadata(lease?: string): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set('containerd-namespace', this.namespace);
    if (lease) md.set('containerd-lease', lease);
    return md;
  }

  /**
   * One unary call. A containerd that was down (restarted, or started after the agent) leaves the channel in
   * a back-off where calls fail at once: on such a failure the channel is asked to connect now, and when it
   * does within RECONNECT_MS the call is made once more.
   */
  private async unary<T>(svc: ServiceClient, method: string, req: unknown, what: string, lease?: string, timeoutMs = 60_000): Promise<T> {
    try {
      return await this.unaryOnce<T>(svc, method, req, what, lease, timeoutMs);
    } catch (err) {
      if (!isGrpcCode(err, grpc.status.UNAVAILABLE) || !(await this.reconnect(svc))) throw err;
      return this.unaryOnce<T>(svc, method, req, what, lease, timeoutMs);
    }
  }

  /** Whether the channel of `svc` is (or gets) connected within RECONNECT_MS. */
  private reconnect(svc: ServiceClient): Promise<boolean> {
    return new Promise((resolve) => svc.waitForReady(new Date(Date.now() + RECONNECT_MS), (err) => resolve(!err)));
  }

  private unaryOnce<T>(svc: ServiceClient, method: string, req: unknown, what: string, lease?: string, timeoutMs = 60_000): Promise<T> {
    return new Promise((resolve, reject) => {
      const fn = svc[method] as Unary;
      const deadline = new Date(Date.now() + timeoutMs);
      (fn as unknown as (r: unknown, m: grpc.Metadata, o: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void).call(
        svc,
        req,
        this.metadata(lease),
        { deadline },
        (err, res) => (err ? reject(runtimeError(err, what)) : resolve(res as T)),
      );
    });
  }

  // content

  async info(digest: string): Promise<ContentInfo | undefined> {
    try {
      const res = await this.unary<{ info: ContentInfo }>(this.content, 'Info', { digest }, `content info ${digest}`);
      return res.info;
    } catch (err) {
      if (isGrpcCode(err, grpc.status.NOT_FOUND)) return undefined;
      throw err;
    }
  }

  async setContentLabels(digest: string, labels: Record<string, string>): Promise<void> {
    const paths = Object.keys(labels).map((k) => `labels.${k}`);
    await this.unary(this.content, 'Update', { info: { digest, labels }, update_mask: { paths } }, `labels of ${digest}`);
  }

  async deleteContent(digest: string): Promise<void> {
    await this.unary(this.content, 'Delete', { digest }, `delete of ${digest}`);
  }

  async abortWrite(ref: string): Promise<void> {
    await this.unary(this.content, 'Abort', { ref }, `abort of ${ref}`).catch(() => undefined);
  }

  read(digest: string, offset: number, size: number): grpc.ClientReadableStream<{ offset: number; data: Buffer }> {
    return (this.content['Read'] as ServerStream).call(this.content, { digest, offset, size }, this.metadata()) as grpc.ClientReadableStream<{
      offset: number;
      data: Buffer;
    }>;
  }

  listContent(): grpc.ClientReadableStream<{ info: ContentInfo[] }> {
    return (this.content['List'] as ServerStream).call(this.content, { filters: [] }, this.metadata()) as grpc.ClientReadableStream<{ info: ContentInfo[] }>;
  }

  write(lease: string): grpc.ClientDuplexStream<WriteMessage, WriteReply> {
    return (this.content['Write'] as Duplex).call(this.content, this.metadata(lease)) as grpc.ClientDuplexStream<WriteMessage, WriteReply>;
  }

  // images

  async listImages(): Promise<ContainerdImage[]> {
    const res = await this.unary<{ images: ContainerdImage[] }>(this.imagesSvc, 'List', { filters: [] }, 'image list');
    return res.images;
  }

  async getImage(name: string): Promise<ContainerdImage | undefined> {
    try {
      return (await this.unary<{ image: ContainerdImage }>(this.imagesSvc, 'Get', { name }, `image ${name}`)).image;
    } catch (err) {
      if (isGrpcCode(err, grpc.status.NOT_FOUND)) return undefined;
      throw err;
    }
  }

  /** Creates the image, or points an existing one of that name at `target`. */
  async putImage(name: string, target: Descriptor, lease?: string): Promise<void> {
    const image = { name, labels: {}, target };
    try {
      await this.unary(this.imagesSvc, 'Create', { image }, `image create ${name}`, lease);
    } catch (err) {
      if (!isGrpcCode(err, grpc.status.ALREADY_EXISTS)) throw err;
      await this.unary(this.imagesSvc, 'Update', { image, update_mask: { paths: ['target'] } }, `image update ${name}`, lease);
    }
  }

  async deleteImage(name: string): Promise<void> {
    try {
      await this.unary(this.imagesSvc, 'Delete', { name, sync: false }, `image delete ${name}`);
    } catch (err) {
      if (!isGrpcCode(err, grpc.status.NOT_FOUND)) throw err;
    }
  }

  // leases

  async createLease(id: string, labels: Record<string, string>): Promise<void> {
    await this.unary(this.leasesSvc, 'Create', { id, labels }, `lease ${id}`);
  }

  async deleteLease(id: string): Promise<void> {
    try {
      await this.unary(this.leasesSvc, 'Delete', { id, sync: false }, `lease delete ${id}`);
    } catch (err) {
      if (!isGrpcCode(err, grpc.status.NOT_FOUND)) throw err;
    }
  }

  // events

  /** Whether the events channel is (or gets) connected within `timeoutMs`. */
  eventsReady(timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => this.eventsSvc.waitForReady(new Date(Date.now() + timeoutMs), (err) => resolve(!err)));
  }

  subscribe(filters: string[]): grpc.ClientReadableStream<{ namespace: string; topic: string }> {
    const md = new grpc.Metadata(); // events of every namespace come through; the filter picks ours
    return (this.eventsSvc['Subscribe'] as ServerStream).call(this.eventsSvc, { filters }, md) as grpc.ClientReadableStream<{ namespace: string; topic: string }>;
  }

  // snapshots and diff

  async statSnapshot(snapshotter: string, key: string): Promise<boolean> {
    try {
      await this.unary(this.snapshotsSvc, 'Stat', { snapshotter, key }, `snapshot ${key}`);
      return true;
    } catch (err) {
      if (isGrpcCode(err, grpc.status.NOT_FOUND)) return false;
      throw err;
    }
  }

  async prepareSnapshot(snapshotter: string, key: string, parent: string, lease: string): Promise<Mount[]> {
    const res = await this.unary<{ mounts: Mount[] }>(this.snapshotsSvc, 'Prepare', { snapshotter, key, parent, labels: {} }, `snapshot prepare ${key}`, lease);
    return res.mounts;
  }

  async commitSnapshot(snapshotter: string, name: string, key: string, lease: string): Promise<void> {
    await this.unary(this.snapshotsSvc, 'Commit', { snapshotter, name, key, labels: {} }, `snapshot commit ${name}`, lease);
  }

  async removeSnapshot(snapshotter: string, key: string): Promise<void> {
    await this.unary(this.snapshotsSvc, 'Remove', { snapshotter, key }, `snapshot remove ${key}`).catch(() => undefined);
  }

  /** Unpacks a layer blob onto mounts; answers the descriptor of what was applied (the uncompressed digest). */
  async applyDiff(diff: Descriptor, mounts: Mount[], lease: string): Promise<Descriptor> {
    const res = await this.unary<{ applied: Descriptor }>(this.diffSvc, 'Apply', { diff, mounts }, `unpack of ${diff.digest}`, lease, 30 * 60_000);
    return res.applied;
  }

  close(): void {
    for (const c of [this.imagesSvc, this.leasesSvc, this.eventsSvc, this.snapshotsSvc, this.diffSvc, this.content]) c.close();
  }
}
