import { z } from 'zod';
import { MAX_MANIFEST_BYTES } from '../oci/media-types.js';
import { type OperationStatus, machineStatuses, operationKinds, operationStatuses, targetStatuses } from './wire-values.js';

/**
 * The wire contract of the cluster: what the control plane's REST API, the agents and stowctl send each
 * other. Records are discriminated unions with a tag field, so TypeScript narrows them and scripts can
 * branch on fields. Every schema here is used on both ends: the sender builds it, the receiver parses it.
 *
 * Credentials:
 *   - API tokens ("stk_…"): `Authorization: Bearer` on /api/v1 and /admin/gql; a user with a role.
 *   - The join token ("sjt_…"): lets an agent join (POST /api/v1/machines/join).
 *   - A machine secret ("sms_…"): issued at join, `Authorization: Bearer` for the agent's own calls to the
 *     control plane and for the control plane's calls to the agent's /agent/v1 API.
 *   - Peer tokens ("spt.…"): minted by the control plane with a machine's secret, scoped to pull or push
 *     on that machine's /v2/, short-lived; sent as the Basic password (any username) — see peer-token.ts.
 */

const digestString = z.string().regex(/^sha256:[a-f0-9]{64}$/, 'expected a sha256 digest (sha256:<64 hex>)');
/** os/arch[/variant] by containerd's grammar ("linux/arm64/v8"); anything else (e.g. "../../x") is refused. */
const platformString = z
  .string()
  .min(1)
  .max(100)
  .refine((p) => isPlatformString(p), 'expected a platform os/arch[/variant], e.g. linux/amd64');
/** Sizes, counts and sequence numbers: whole, not negative, exact in a double (no 1e300). */
const safeCount = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const isoTime = z.string();

// ---------------------------------------------------------------------------------------------
// Errors

export const failureSchema = z.object({
  code: z.string(),
  message: z.string(),
  /** Where a transfer failed: connect, manifest, blobs, verify, record, upload, … */
  stage: z.string().optional(),
});
export type Failure = z.infer<typeof failureSchema>;

/** Every non-2xx answer of /api/v1 and /agent/v1. */
export const errorBodySchema = z.object({ error: failureSchema.extend({ details: z.record(z.unknown()).optional() }) });
export type ErrorBody = z.infer<typeof errorBodySchema>;

// ---------------------------------------------------------------------------------------------
// Inventory (agent → control plane)

/** More layers than any image can have (Docker caps an image at 127). */
export const MAX_LAYERS_PER_IMAGE = 10_000;

/** One platform image held by an agent. `digest` is the platform manifest digest (the identity). */
export const inventoryItemSchema = z.object({
  digest: digestString,
  /** The index (manifest list) this manifest belongs to, when the agent holds one naming it. */
  index_digest: digestString.optional(),
  /** The Docker image ID. */
  config_digest: digestString,
  platform: platformString,
  /** Fully normalised tags pointing at the manifest or its index ("docker.io/library/alpine:3.19"). */
  references: z.array(z.string()).max(1000),
  size_bytes: safeCount,
  /**
   * The image's layer blob digests, so the control plane can tell where a blob is (the pull-through mirror
   * takes blobs from peers that hold them). Older agents leave it out.
   */
  layers: z.array(digestString).max(MAX_LAYERS_PER_IMAGE).optional(),
});
export type InventoryItem = z.infer<typeof inventoryItemSchema>;

export const MAX_INVENTORY_ITEMS = 100_000;

export const machineInfoSchema = z.object({
  /** Base URL of the agent's HTTP endpoint serving /v2/ and /agent/v1 ("http://10.0.0.5:5080"). */
  agent_url: z.string().url(),
  /** "linux/amd64": chosen from an index when no --platform is given. */
  platform: platformString,
  labels: z.record(z.string().max(256)).default({}),
  scaling_group: z.string().max(64).optional(),
  version: z.string().max(64).optional(),
});
export type MachineInfo = z.infer<typeof machineInfoSchema>;

export const joinRequestSchema = machineInfoSchema.extend({
  join_token: z.string().min(1),
  /** Requested machine ID; generated when absent. [a-z0-9][a-z0-9-]{0,62} */
  name: z
    .string()
    .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'machine names are lowercase letters, digits and dashes, up to 63')
    .optional(),
  inventory: z.array(inventoryItemSchema).max(MAX_INVENTORY_ITEMS),
  inventory_seq: safeCount,
  /** A PEM certificate signing request for the machine certificate (control planes that serve TLS sign it). */
  csr: z.string().max(16 * 1024).optional(),
});
export type JoinRequest = z.infer<typeof joinRequestSchema>;

export const joinResponseSchema = z.object({
  machine_id: z.string(),
  machine_secret: z.string(),
  heartbeat_interval_ms: z.number().int().positive(),
  /** The machine certificate signed from the join's CSR (PEM), when the control plane serves TLS. */
  certificate: z.string().optional(),
});
export type JoinResponse = z.infer<typeof joinResponseSchema>;

/** POST /api/v1/machines/:id/certificate — a new machine certificate before the current one expires. */
export const certificateRequestSchema = z.object({ csr: z.string().min(1).max(16 * 1024) });
export const certificateResponseSchema = z.object({ certificate: z.string() });

/** PUT /api/v1/machines/:id/inventory — the whole inventory (after join, or when asked to resync). */
export const fullInventorySchema = z.object({
  seq: safeCount,
  items: z.array(inventoryItemSchema).max(MAX_INVENTORY_ITEMS),
});

/**
 * POST /api/v1/machines/:id/inventory/delta — what changed since `base_seq`. The control plane answers
 * 409 INVENTORY_RESYNC when its seq for the machine is not base_seq; the agent then sends a full one.
 */
export const inventoryDeltaSchema = z.object({
  base_seq: safeCount,
  seq: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  upserted: z.array(inventoryItemSchema).max(MAX_INVENTORY_ITEMS),
  removed: z.array(digestString).max(MAX_INVENTORY_ITEMS),
});
export type InventoryDelta = z.infer<typeof inventoryDeltaSchema>;

/** POST /api/v1/machines/:id/heartbeat */
export const heartbeatSchema = machineInfoSchema.partial().extend({
  inventory_seq: safeCount,
  /** Bytes the machine's content store holds (older agents leave it out). */
  disk_used_bytes: safeCount.optional(),
});
export type Heartbeat = z.infer<typeof heartbeatSchema>;
/** The answer: resync=true when the control plane's seq differs (it then wants a full inventory). */
export const revokedTokensSchema = z.object({ keys: z.array(z.string().max(64)).max(100_000), operations: z.array(z.string().max(128)).max(100_000) });
/** The answer to a full inventory: an agent that restarted learns the revocations before its first heartbeat. */
export const fullInventoryResponseSchema = z.object({ revoked: revokedTokensSchema.optional() });
export const heartbeatResponseSchema = z.object({
  resync: z.boolean(),
  heartbeat_interval_ms: z.number().int().positive(),
  /** Tokens the agent must refuse (absent from control planes that predate revocation). */
  revoked: revokedTokensSchema.optional(),
});

// ---------------------------------------------------------------------------------------------
// Machines and availability (control plane → stowctl)

export const machineSchema = z.object({
  id: z.string(),
  agent_url: z.string(),
  platform: z.string(),
  labels: z.record(z.string()),
  scaling_group: z.string().nullable(),
  /** unknown: not heard from since the control plane (re)started, for up to offlineAfterMs. */
  status: z.enum(machineStatuses),
  last_seen_at: isoTime,
  joined_at: isoTime,
  version: z.string().nullable(),
  image_count: safeCount,
  /** Bytes of its content store as its agent last reported; null until it has. */
  disk_used_bytes: safeCount.nullable(),
});
export type Machine = z.infer<typeof machineSchema>;

export const presenceSchema = z.discriminatedUnion('state', [
  z.object({ state: z.literal('present') }),
  z.object({ state: z.literal('transferring'), operation_id: z.string() }),
  z.object({ state: z.literal('absent') }),
  z.object({ state: z.literal('failed'), operation_id: z.string(), failure: failureSchema }),
]);
export type Presence = z.infer<typeof presenceSchema>;

export const availabilitySchema = z.object({
  machine_id: z.string(),
  digest: digestString,
  index_digest: digestString.nullable(),
  config_digest: digestString.nullable(),
  platform: z.string(),
  references: z.array(z.string()),
  size_bytes: safeCount,
  presence: presenceSchema,
  machine_status: z.enum(machineStatuses),
  updated_at: isoTime,
});
export type Availability = z.infer<typeof availabilitySchema>;

// ---------------------------------------------------------------------------------------------
// Operations

export { machineStatuses, operationKinds, operationStatuses, targetStatuses, type MachineStatus, type OperationKind, type OperationStatus, type TargetStatus } from './wire-values.js';

export const targetResultSchema = z.object({
  machine_id: z.string(),
  status: z.enum(targetStatuses),
  bytes_transferred: safeCount,
  bytes_total: safeCount.nullable(),
  failure: failureSchema.optional(),
  started_at: isoTime.nullable(),
  finished_at: isoTime.nullable(),
});
export type TargetResult = z.infer<typeof targetResultSchema>;

export const artifactSchema = z.object({
  /** What was asked for: a platform manifest or an index digest. */
  digest: digestString.nullable(),
  reference: z.string().nullable(),
  platform: z.string().nullable(),
  size_bytes: safeCount.nullable(),
});
export type Artifact = z.infer<typeof artifactSchema>;

export const operationSchema = z.object({
  id: z.string(),
  kind: z.enum(operationKinds),
  status: z.enum(operationStatuses),
  /** Finer than status: created, uploading, transferring, done, … */
  stage: z.string(),
  actor: z.string(),
  artifact: artifactSchema,
  source_machine: z.string().nullable(),
  targets: z.array(targetResultSchema),
  /** For work without targets (rescan): done/total units and a line of text. */
  progress: z.object({ current: z.number(), total: z.number(), message: z.string() }),
  created_at: isoTime,
  updated_at: isoTime,
  finished_at: isoTime.nullable(),
  error: failureSchema.optional(),
});
export type Operation = z.infer<typeof operationSchema>;

export const TERMINAL_OPERATION_STATUSES: readonly OperationStatus[] = ['succeeded', 'partially_failed', 'failed', 'cancelled'];

/** POST /api/v1/operations/distribute */
export const distributeRequestSchema = z.object({
  digest: digestString,
  from: z.string().min(1),
  to: z.array(z.string().min(1)).min(1).max(1000),
  platform: platformString.optional(),
});
export type DistributeRequest = z.infer<typeof distributeRequestSchema>;

/** POST /api/v1/operations/push: stowctl has the image locally and will upload it to the first target. */
export const pushRequestSchema = z.object({
  /** The image's top digest (platform manifest, or index with the chosen platforms). */
  digest: digestString,
  reference: z.string().min(1).max(512).optional(),
  platform: platformString.optional(),
  size_bytes: safeCount,
  to: z.array(z.string().min(1)).min(1).max(1000),
  expected_digest: digestString.optional(),
  /**
   * The platform manifest `digest` names, as its JSON text: with it, the other targets start pulling from
   * the first while stowctl still uploads to it (what has arrived there flows on at once).
   */
  manifest: z.string().min(1).max(MAX_MANIFEST_BYTES).optional(),
});
export type PushRequest = z.infer<typeof pushRequestSchema>;

/** Where and how stowctl uploads (OCI distribution push to the first target's /v2/). */
export const uploadGrantSchema = z.object({
  machine_id: z.string(),
  registry_url: z.string(),
  repository: z.string(),
  tag: z.string().optional(),
  username: z.string(),
  password: z.string(),
  expires_at: isoTime,
});
export type UploadGrant = z.infer<typeof uploadGrantSchema>;

export const pushResponseSchema = z.object({ operation: operationSchema, upload: uploadGrantSchema.nullable() });

/** POST /api/v1/operations/:id/upload-finished — stowctl reports how its upload ended. */
export const uploadFinishedSchema = z.discriminatedUnion('outcome', [
  z.object({ outcome: z.literal('uploaded'), bytes_transferred: safeCount }),
  z.object({ outcome: z.literal('failed'), failure: failureSchema }),
]);

// ---------------------------------------------------------------------------------------------
// Agent API (/agent/v1, called by the control plane with the machine secret)

/** Where a transfer reads from: a peer agent's /v2/ or a registry, with credentials for it. */
export const transferSourceSchema = z.object({
  /** "http://127.0.0.1:5080" or "https://registry.example.com". */
  registry_url: z.string().url(),
  /** Repository path on that registry ("library/alpine"); any name works on a peer agent for digests. */
  repository: z.string().min(1),
  username: z.string().optional(),
  password: z.string().optional(),
  insecure: z.boolean().optional(),
});
export type TransferSource = z.infer<typeof transferSourceSchema>;

/** POST /agent/v1/transfers: fetch an image (only missing blobs), verify, record, tag. */
export const transferRequestSchema = z.object({
  operation_id: z.string(),
  source: transferSourceSchema,
  /** A manifest or index digest, or a tag on the source (preload from a registry by tag). */
  ref: z.string().min(1),
  /** Platform to pick when ref is an index. */
  platform: platformString.optional(),
  /** Tags to record locally once the image is in (normalised references). */
  references: z.array(z.string()).max(1000).default([]),
  /**
   * Machines to take blobs from before `source`, nearest first (pipelined fan-out: each may still be
   * receiving them). Manifests always come from `source`; a peer that fails is passed over for the next.
   */
  peers: z.array(transferSourceSchema).max(64).optional(),
});
export type TransferRequest = z.infer<typeof transferRequestSchema>;

/**
 * The answer is NDJSON, one event per line, ending with a `result` or an `error` line. A second request
 * for an image already in flight attaches to the running transfer.
 */
export const transferEventSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('progress'), bytes_transferred: z.number(), bytes_total: z.number().nullable() }),
  z.object({
    type: z.literal('result'),
    /** present: bytes were moved (or it arrived during this transfer); skipped_present: it was already whole here. */
    status: z.enum(['present', 'skipped_present']),
    digest: digestString,
    config_digest: digestString,
    platform: z.string(),
    bytes_transferred: safeCount,
    size_bytes: safeCount,
  }),
  z.object({ type: z.literal('error'), failure: failureSchema }),
]);
export type TransferEvent = z.infer<typeof transferEventSchema>;

/** GET /agent/v1/images/:digest → 200 with this, 404 IMAGE_NOT_FOUND. */
export const agentImageSchema = inventoryItemSchema;

/** POST /agent/v1/unload {ref, platform?}: removes the tags and records of an image; GC follows. */
/**
 * POST /agent/v1/incoming: an image is being uploaded to this machine (a push). The agent keeps its manifest
 * and announces its blobs, so peers may read them from its /v2/ while they arrive; DELETE
 * /agent/v1/incoming/:operation_id (or the end of ttl_seconds) withdraws the announcement.
 */
export const incomingRequestSchema = z.object({
  operation_id: z.string().min(1).max(200),
  manifest: z.string().min(1).max(MAX_MANIFEST_BYTES),
  ttl_seconds: z.number().int().min(1).max(7 * 24 * 3600),
});
export type IncomingRequest = z.infer<typeof incomingRequestSchema>;

export const unloadRequestSchema = z.object({ ref: z.string().min(1), platform: platformString.optional() });
export const unloadResponseSchema = z.object({ removed: z.array(digestString) });

// ---------------------------------------------------------------------------------------------
// Inspect (GET /api/v1/images/inspect?digest=&reference=&machine=)

export const inspectPlatformSchema = z.object({
  digest: digestString,
  platform: z.string(),
  config_digest: digestString,
  media_type: z.string(),
  size_bytes: safeCount,
  created: z.string().nullable(),
  labels: z.record(z.string()),
  layers: z.array(z.object({ digest: digestString, size_bytes: safeCount, media_type: z.string() })),
});

export const imageInspectSchema = z.object({
  /** The digest asked for (or the one the reference resolved to). */
  digest: digestString,
  kind: z.enum(['manifest', 'index']),
  media_type: z.string(),
  references: z.array(z.string()),
  /** Read from this machine's /v2/. */
  read_from: z.string(),
  platforms: z.array(inspectPlatformSchema),
  availability: z.array(availabilitySchema),
});
export type ImageInspect = z.infer<typeof imageInspectSchema>;

/** SSE data of bgtask_updated / bgtask_done / bgtask_failed / bgtask_cancelled. */
export const taskEventSchema = z.object({
  task_id: z.string(),
  message: z.string(),
  current_progress: z.number(),
  total_progress: z.number(),
  /** On bgtask_done of a partial success: what failed (Backend.AI's partial-success payload). */
  errors: z.array(z.string()).optional(),
  operation: operationSchema,
});
export type TaskEvent = z.infer<typeof taskEventSchema>;

/** containerd's specifier grammar, as src/oci/platform.ts parses it (not imported: the dashboard reads this file). */
const PLATFORM_RE = /^[A-Za-z0-9_-]+(?:\([A-Za-z0-9_.-]*\))?(?:\/[A-Za-z0-9_-]+){0,2}$/;

function isPlatformString(p: string): boolean {
  return PLATFORM_RE.test(p);
}

// ---------------------------------------------------------------------------------------------
// Blob holders (agent → control plane): where in the cluster a blob can be read (pull-through mirror)

export const MAX_BLOB_SOURCE_DIGESTS = 1_000;

/** POST /api/v1/machines/:id/blob-sources: which other online machines hold these blobs. */
export const blobSourcesRequestSchema = z.object({ digests: z.array(digestString).min(1).max(MAX_BLOB_SOURCE_DIGESTS) });
export type BlobSourcesRequest = z.infer<typeof blobSourcesRequestSchema>;

/** Per asked digest, the holders (possibly none), each with a pull token for its /v2/. */
export const blobSourcesResponseSchema = z.object({
  sources: z.record(z.array(transferSourceSchema.extend({ machine_id: z.string() }))),
});
export type BlobSourcesResponse = z.infer<typeof blobSourcesResponseSchema>;
