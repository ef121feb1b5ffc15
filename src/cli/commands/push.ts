import type { Command } from 'commander';
import type { Operation, PushRequest, UploadGrant } from '../../control/wire.js';
import { pushImage } from '../../registry/push.js';
import { RegistryClient } from '../../registry/client.js';
import type { CommandContext } from '../context.js';
import { CliError, toCliError, usageError } from '../errors.js';
import { digestArg, machineListArg, platformArg } from '../flags.js';
import type { ApiClient } from '../http.js';
import { type LocalImage, checkExpectedDigest, readLocalImage } from '../local-image.js';
import { uploadView } from '../progress.js';
import { operationResponseSchema, pushResponseSchema } from '../responses.js';
import { finish } from './distribute.js';
import type { Bind } from './types.js';

/**
 * `image push`: read the image locally (archive or Docker API) into a temporary store, check
 * --expected-digest, create the push operation, upload once to the first target's /v2/ (only the blobs
 * it lacks), report how the upload ended, then follow the operation as it distributes to the rest.
 */
export function registerPush(image: Command, bind: Bind): void {
  image
    .command('push')
    .description('push a local image (Docker API at DOCKER_HOST, or --archive) to machines')
    .argument('<image>', 'image reference or ID ("alpine:3.19"); with --archive, which image of the archive')
    .requiredOption('--to <id>', 'target machine (repeat, or comma-separate); the first receives the upload', machineListArg('--to'))
    .option('--platform <os/arch[/variant]>', 'the platform to take from a multi-platform image', platformArg)
    .option('--expected-digest <digest>', 'refuse to push unless the image has this digest (or image ID)', digestArg('--expected-digest'))
    .option('--archive <file>', 'read a `docker save` or OCI layout tar instead of the Docker API')
    .action(
      bind(async (ctx, opts, [name]) => {
        const to = opts['to'] as string[];
        if (to.length === 0) throw usageError('--to needs at least one machine');
        const expected = opts['expected-digest'] as string | undefined ?? (opts['expectedDigest'] as string | undefined);
        // Settle the configuration first: a bad host or config file is exit 2 before any image is read.
        await ctx.resolvedConfig();
        const img = await readLocalImage({
          image: name!,
          archive: opts['archive'] as string | undefined,
          dockerHost: ctx.io.env['DOCKER_HOST'],
          platform: opts['platform'] as string | undefined,
        });
        try {
          if (expected !== undefined) checkExpectedDigest(img, expected, name!);
          const body: PushRequest = { digest: img.digest, size_bytes: img.sizeBytes, to };
          if (img.reference) body.reference = img.reference;
          const platform = (opts['platform'] as string | undefined) ?? img.platform;
          if (platform) body.platform = platform;
          if (expected !== undefined) body.expected_digest = expected;
          const api = await ctx.api();
          const res = await api.call('POST', '/api/v1/operations/push', pushResponseSchema, { body });
          let op = res.operation;
          if (res.upload) op = await upload(ctx, api, img, op, res.upload);
          return await finish(ctx, api, op);
        } finally {
          await img.close();
        }
      }),
    );
}

async function upload(ctx: CommandContext, api: ApiClient, img: LocalImage, op: Operation, grant: UploadGrant): Promise<Operation> {
  const path = `/api/v1/operations/${encodeURIComponent(op.id)}/upload-finished`;
  const view = uploadView(ctx.progress, ctx.io.stderr, `upload → ${grant.machine_id}`);
  let failure: CliError | undefined;
  try {
    const url = new URL(grant.registry_url);
    const client = new RegistryClient({
      host: url.host,
      insecure: url.protocol === 'http:',
      credentials: { username: grant.username, password: grant.password },
    });
    await pushImage(client, img.handles, img.digest, grant.repository, grant.tag, { onProgress: (e) => view.onEvent(e) });
  } catch (err) {
    failure = toCliError(err);
  } finally {
    view.stop();
  }
  if (failure) {
    // Tell the control plane, so the operation ends failed instead of waiting for an upload that never comes.
    try {
      await reportUpload(api, path, { outcome: 'failed', failure: { code: failure.code, message: failure.message, stage: 'upload' } });
    } catch (err) {
      ctx.diag(`stowctl: could not report the failed upload of ${op.id}: ${(err as Error).message}`);
    }
    throw new CliError(failure.code, `upload to ${grant.machine_id} failed: ${failure.message}`, {
      details: { operation_id: op.id, stage: 'upload', ...(failure.details ?? {}) },
      cause: failure,
    });
  }
  return reportUpload(api, path, { outcome: 'uploaded', bytes_transferred: view.bytesSent() });
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
