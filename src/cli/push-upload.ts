import type { Operation, PushRequest, UploadGrant } from '../control/wire.js';
import { clusterDispatcher } from '../cluster/tls-client.js';
import { RegistryClient } from '../registry/client.js';
import { type PushOptions, pushImage } from '../registry/push.js';
import type { CommandContext } from './context.js';
import { CliError, toCliError } from './errors.js';
import { finish } from './finish.js';
import type { ApiClient } from './http.js';
import type { LocalImage } from './local-image.js';
import { uploadView } from './progress.js';
import { operationResponseSchema, pushResponseSchema } from './responses.js';

/**
 * The control-plane side of `image push`, once the image is read and checked: create the push
 * operation, upload once to the first target's /v2/ (only the blobs it lacks), report how the upload
 * ended, then follow the operation as it distributes to the rest.
 */
export async function runPush(ctx: CommandContext, img: LocalImage, o: { to: string[]; platform: string | undefined; expected: string | undefined }): Promise<number> {
  const body: PushRequest = { digest: img.digest, size_bytes: img.sizeBytes, to: o.to };
  if (img.reference) body.reference = img.reference;
  const platform = o.platform ?? img.platform;
  if (platform) body.platform = platform;
  if (o.expected !== undefined) body.expected_digest = o.expected;
  // With the manifest in hand, the control plane starts the other targets while this upload runs.
  if (img.kind === 'manifest' && o.to.length > 1) body.manifest = (await img.handles.store.readBytes(img.digest)).toString('utf8');
  const api = await ctx.api();
  const res = await api.call('POST', '/api/v1/operations/push', pushResponseSchema, { body });
  let op = res.operation;
  if (res.upload) op = await upload(ctx, api, img, op, res.upload);
  return finish(ctx, api, op);
}

async function upload(ctx: CommandContext, api: ApiClient, img: LocalImage, op: Operation, grant: UploadGrant): Promise<Operation> {
  const path = `/api/v1/operations/${encodeURIComponent(op.id)}/upload-finished`;
  const view = uploadView(ctx.progress, ctx.io.stderr, `upload → ${grant.machine_id}`);
  let failure: CliError | undefined;
  try {
    // An agent of a TLS cluster takes only clients with a certificate from the cluster CA (--cert/--key).
    const tls = new URL(grant.registry_url).protocol === 'https:' ? await ctx.tlsFiles() : undefined;
    await uploadImage(grant, img.handles, img.digest, { tls, onProgress: (e) => view.onEvent(e) });
  } catch (err) {
    failure = toCliError(err);
  } finally {
    view.stop();
  }
  if (failure) {
    // An agent whose runtime holds the blobs (containerd) refuses them with the runtime's own code.
    const registryCode = failure.details?.['registryCode'];
    const runtime = registryCode === 'RUNTIME_UNAVAILABLE' || registryCode === 'RUNTIME_ERROR';
    const code = runtime ? registryCode : failure.code;
    const stage = runtime ? 'runtime' : 'upload';
    // Tell the control plane, so the operation ends failed instead of waiting for an upload that never comes.
    try {
      await reportUpload(api, path, { outcome: 'failed', failure: { code, message: failure.message, stage } });
    } catch (err) {
      ctx.diag(`stowctl: could not report the failed upload of ${op.id}: ${(err as Error).message}`);
    }
    throw new CliError(code, `upload to ${grant.machine_id} failed: ${failure.message}`, {
      details: { operation_id: op.id, stage, ...(failure.details ?? {}) },
      cause: failure,
    });
  }
  return reportUpload(api, path, { outcome: 'uploaded', bytes_transferred: view.bytesSent() });
}

/**
 * The upload itself: the image's blobs, then its manifest, to the granted agent's /v2/. Every blob goes in
 * one streamed PUT, never PATCH chunks: the agent writes it through the digest's own ingest, so the other
 * targets read it while it arrives (registry/whole-blob-upload.ts); and in the order a pull reads them
 * (config first), so they can start at once (registry/push.ts).
 */
export async function uploadImage(
  grant: UploadGrant,
  handles: LocalImage['handles'],
  digest: LocalImage['digest'],
  opts: { tls?: Parameters<typeof clusterDispatcher>[0] | undefined; onProgress?: PushOptions['onProgress'] } = {},
): Promise<void> {
  const url = new URL(grant.registry_url);
  const https = url.protocol === 'https:';
  const client = new RegistryClient({
    host: url.host,
    insecure: url.protocol === 'http:',
    ...(https && opts.tls ? { forceHttps: true, dispatcher: clusterDispatcher(opts.tls) } : {}),
    credentials: { username: grant.username, password: grant.password },
    chunkThreshold: Number.MAX_SAFE_INTEGER,
  });
  await pushImage(client, handles, digest, grant.repository, grant.tag, { onProgress: opts.onProgress });
}

const REPORT_PATIENCE_MS = 60_000;

/**
 * Reports how the upload ended. A control plane that restarts meanwhile still waits for this report
 * (the operation resumes in its upload stage), so an unreachable one is retried for a minute.
 */
async function reportUpload(api: ApiClient, path: string, body: Record<string, unknown>): Promise<Operation> {
  const until = Date.now() + REPORT_PATIENCE_MS;
  for (let delay = 250; ; delay = Math.min(delay * 2, 5_000)) {
    try {
      return (await api.call('POST', path, operationResponseSchema, { body })).operation;
    } catch (err) {
      if (toCliError(err).code !== 'CONNECTION_FAILED' || Date.now() + delay > until) throw err;
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}
