import { StowageError } from '../../errors.js';
import { formatReference, parseReference } from '../../oci/reference.js';
import type { ControlContext } from '../context.js';
import type { MachineRecord } from '../machines.js';
import { peerRegistryClient, pullToken } from '../peer-client.js';
import { mintPeerToken } from '../peer-token.js';
import type { Failure, Operation, PushRequest, UploadGrant } from '../wire.js';
import { transferFromSource, uniqueTargets } from './distribute.js';
import { onlineMachineFor, toFailure } from './runner.js';
import { type EarlyFanout, fanOutWhileUploading } from './push-fanout.js';
import { digestOf } from '../../oci/digest.js';
import { parseManifestBytes } from '../../oci/manifest.js';

/**
 * push: stowctl holds the image; it uploads it once, over the OCI distribution protocol, to the first
 * online target (only the blobs that agent lacks), then the other targets pull it from there exactly as
 * in a distribute. The control plane hands out a push-scoped peer token for that one agent and waits
 * for stowctl to report the upload, or for the upload deadline.
 */

export interface PushParams {
  digest: string;
  platform?: string | undefined;
  reference?: string | undefined;
  upload_machine: string;
  upload_deadline: number;
  repository: string;
  /** stowctl's report, kept before it is acted on: a restart in between acts on it, not waits for another. */
  upload_report?: UploadReport;
  /** The pushed platform manifest's JSON text, when stowctl sent it: the fan-out then starts with the upload. */
  manifest?: string | undefined;
}

/**
 * Wakes the push handler waiting for stowctl's upload report. While it waits it also looks at the upload
 * target now and then: a stowctl that died after its last manifest PUT still completed the upload.
 */
export class UploadWaiters {
  private readonly waiting = new Map<string, (report: UploadReport) => void>();

  constructor(private readonly probeEveryMs = 5_000) {}

  /**
   * Waits for the report. `stored` reads the one the route may have kept before this waiter was registered
   * (it came while the push was still announcing its fan-out, here or on another replica): it is looked at
   * once the waiter is in place, so a report is never missed between the two.
   */
  wait(
    opId: string,
    deadline: number,
    probe: () => Promise<boolean>,
    signal?: AbortSignal,
    stored?: () => Promise<UploadReport | undefined>,
  ): Promise<UploadReport> {
    return new Promise((resolve) => {
      const settle = (report: UploadReport): void => {
        clearTimeout(timer);
        clearInterval(poll);
        signal?.removeEventListener('abort', onAbort);
        this.waiting.delete(opId);
        resolve(report);
      };
      const onAbort = (): void => settle({ outcome: 'failed', failure: { code: 'CANCELLED', message: 'the push was cancelled', stage: 'upload' } });
      signal?.addEventListener('abort', onAbort, { once: true });
      const timer = setTimeout(
        () => settle({ outcome: 'failed', failure: { code: 'UPLOAD_TIMEOUT', message: 'stowctl did not finish the upload in time', stage: 'upload' } }),
        Math.max(0, deadline - Date.now()),
      );
      let probing = false;
      const poll = setInterval(() => {
        if (probing) return;
        probing = true;
        probe()
          .then((done) => {
            // The bytes it sent are stowctl's to tell; unknown here.
            if (done && this.waiting.has(opId)) settle({ outcome: 'uploaded', bytes_transferred: 0 });
          })
          .catch(() => undefined)
          .finally(() => (probing = false));
      }, this.probeEveryMs);
      timer.unref();
      poll.unref();
      this.waiting.set(opId, settle);
      if (signal?.aborted) onAbort();
      stored?.()
        .then((report) => {
          if (report && this.waiting.get(opId) === settle) settle(report);
        })
        .catch(() => undefined);
    });
  }

  /**
   * Told of a report no handler here waits for: the push may run on another replica (it reads the report
   * the route stored in its params).
   */
  onUnheard: ((opId: string) => void) | undefined;

  /** The pushes waiting here for their report. */
  waitingFor(): string[] {
    return [...this.waiting.keys()];
  }

  /** False when no handler waits for this operation's upload (not a push, or not uploading). */
  report(opId: string, report: UploadReport): boolean {
    const wake = this.waiting.get(opId);
    if (!wake) return false;
    wake(report);
    return true;
  }

  /** Shutdown: every waiter settles (as failed; the frozen store records nothing, so a restart resumes). */
  closeAll(): void {
    for (const wake of [...this.waiting.values()]) wake({ outcome: 'failed', failure: { code: 'SHUTDOWN', message: 'the control plane stopped', stage: 'upload' } });
  }
}

export type UploadReport = { outcome: 'uploaded'; bytes_transferred: number } | { outcome: 'failed'; failure: Failure };

export async function createPush(ctx: ControlContext, req: PushRequest, actor: string): Promise<{ operation: Operation; upload: UploadGrant | null }> {
  if (req.expected_digest !== undefined && req.expected_digest !== req.digest) {
    throw new StowageError('DIGEST_MISMATCH', `the image is ${req.digest}, not the expected ${req.expected_digest}`, {
      details: { expected: req.expected_digest, actual: req.digest },
    });
  }
  const reference = req.reference === undefined ? undefined : parseReference(req.reference);
  const targets = await uniqueTargets(ctx, req.to);
  let uploadTo: MachineRecord | undefined;
  for (const id of targets) {
    const m = await ctx.machines.get(id);
    if (m?.status === 'online') {
      uploadTo = m;
      break;
    }
  }
  if (!uploadTo) throw new StowageError('MACHINE_OFFLINE', 'every target is offline: nowhere to upload to', { details: { machine_ids: targets } });
  const repository = reference?.path ?? 'stowage/push';
  // The records say so, and the agent confirms: an upload skipped on a stale record would be missed.
  const already = (await ctx.availability.presentOn(uploadTo.id, req.digest)).length > 0 && (await manifestOn(ctx, uploadTo, repository, req.digest).catch(() => false));
  const deadline = Date.now() + ctx.config.uploadTimeoutMs;
  const params: PushParams = {
    digest: req.digest,
    platform: req.platform,
    reference: req.reference,
    upload_machine: uploadTo.id,
    upload_deadline: deadline,
    repository,
    ...(targets.length > 1 && req.manifest !== undefined ? { manifest: checkedManifest(req.manifest, req.digest) } : {}),
  };
  const op = await ctx.operations.create({
    kind: 'push',
    actor,
    artifact: { digest: req.digest, reference: req.reference ?? null, platform: req.platform ?? null, size_bytes: req.size_bytes },
    sourceMachine: uploadTo.id,
    targets: [uploadTo.id, ...targets.filter((t) => t !== uploadTo.id)],
    params: { ...params },
    stage: already ? 'transferring' : 'uploading',
  });
  if (already) {
    await ctx.operations.updateTarget(op.id, uploadTo.id, { status: 'skipped_present', bytesTransferred: 0, bytesTotal: 0 });
    return { operation: await ctx.operations.require(op.id), upload: null };
  }
  await ctx.operations.updateTarget(op.id, uploadTo.id, { status: 'running' });
  const operation = await ctx.operations.require(op.id);
  const upload: UploadGrant = {
    machine_id: uploadTo.id,
    registry_url: uploadTo.agent_url,
    // Pushed by digest: the tags are recorded afterwards with the full reference (see confirmUpload),
    // since a /v2/ name cannot carry every registry host (one with a port, for one).
    repository: params.repository,
    username: 'stowage',
    password: mintPeerToken(uploadTo.secret, { m: uploadTo.id, s: 'push', exp: Math.ceil(deadline / 1000), op: op.id }),
    expires_at: new Date(deadline).toISOString(),
  };
  return { operation, upload };
}

export async function runPush(ctx: ControlContext, opId: string): Promise<void> {
  const op = await ctx.operations.require(opId);
  const params = await ctx.operations.params<PushParams>(opId);
  let early: EarlyFanout | undefined;
  if (op.stage === 'uploading') {
    await ctx.operations.setStage(opId, 'uploading');
    const signal = ctx.runner.signalFor(opId);
    // The other targets start now, reading from the upload target what has reached it so far.
    early = params.upload_report === undefined ? await fanOutWhileUploading(ctx, opId, params) : undefined;
    const stored = async () => (await ctx.operations.params<PushParams>(opId)).upload_report;
    const report = params.upload_report ?? (await ctx.uploads.wait(opId, params.upload_deadline, () => uploadIsWhole(ctx, params), signal, stored));
    if (signal.aborted) {
      void early?.withdraw();
      return;
    }
    const failure = report.outcome === 'uploaded' ? await confirmUpload(ctx, opId, params) : report.failure;
    // Whole, or never to be: blobs that did not arrive fail the targets still waiting for them.
    await early?.withdraw();
    if (failure) {
      await early?.done;
      await ctx.operations.abandon(opId, 'failed', failure);
      return;
    }
    const bytes = report.outcome === 'uploaded' ? report.bytes_transferred : 0;
    await ctx.operations.updateTarget(opId, params.upload_machine, { status: 'present', bytesTransferred: bytes, bytesTotal: bytes });
  } else if (params.reference !== undefined) {
    // Nothing was uploaded (the machine had the image): it still gets the pushed tag. Idempotent on resume.
    const failure = await confirmUpload(ctx, opId, params);
    if (failure) {
      await ctx.operations.abandon(opId, 'failed', failure);
      return;
    }
  }
  await ctx.operations.setStage(opId, 'transferring');
  if (early) {
    await early.done;
    // A target that did not get the image while it was uploaded gets it now, from the whole upload.
    for (const t of (await ctx.operations.require(opId)).targets) {
      if (t.status === 'failed') await ctx.operations.updateTarget(opId, t.machine_id, { status: 'pending', failure: null, bytesTransferred: 0 });
    }
  }
  // The other targets pull from the upload target, as in a distribute.
  await transferFromSource(ctx, opId, { digest: params.digest, from: params.upload_machine, platform: params.platform });
  await ctx.operations.finish(opId);
}

/**
 * Checks the upload target holds the image and records its tags there, in one call: a transfer of the
 * image from the agent's own /v2/, which moves nothing when the image is whole and fails when it is not.
 * Its answer also gives the availability record, so the others can pull at once.
 */
async function confirmUpload(ctx: ControlContext, opId: string, params: PushParams): Promise<Failure | undefined> {
  try {
    const machine = await onlineMachineFor(ctx, opId, params.upload_machine);
    const password = pullToken(machine, 300, opId);
    const references = params.reference === undefined ? [] : [formatReference(parseReference(params.reference))];
    const outcome = await ctx.runner.agents.transfer(
      machine,
      {
        operation_id: opId,
        source: { registry_url: machine.agent_url, repository: params.repository, username: 'stowage', password },
        ref: params.digest,
        ...(params.platform ? { platform: params.platform } : {}),
        references,
      },
      ctx.runner.signalFor(opId),
      () => {},
    );
    // A runtime that would not take the image is the runtime's failure, not the upload's.
    if (outcome.type === 'error') return { ...outcome.failure, stage: outcome.failure.stage === 'runtime' ? 'runtime' : 'verify' };
    await ctx.availability.markPresent(machine.id, {
      digest: outcome.digest,
      platform: outcome.platform,
      config_digest: outcome.config_digest,
      size_bytes: outcome.size_bytes,
      references,
      ...(outcome.digest !== params.digest ? { index_digest: params.digest } : {}),
    });
    return undefined;
  } catch (err) {
    return toFailure(err, 'verify');
  }
}


/** The manifest text when it is the platform manifest `digest` names; BAD_REQUEST otherwise. */
function checkedManifest(manifest: string, digest: string): string {
  const bytes = Buffer.from(manifest, 'utf8');
  if (digestOf(bytes) !== digest) {
    throw new StowageError('BAD_REQUEST', `the manifest sent is not ${digest} (its digest is ${digestOf(bytes)})`);
  }
  if (parseManifestBytes(bytes).kind !== 'manifest') throw new StowageError('BAD_REQUEST', 'manifest: only a platform manifest is sent along, not an index');
  return manifest;
}

/** Whether the upload target's /v2/ has the manifest: stowctl puts it last, after every blob. */
async function uploadIsWhole(ctx: ControlContext, params: PushParams): Promise<boolean> {
  return manifestOn(ctx, await ctx.machines.require(params.upload_machine), params.repository, params.digest);
}

async function manifestOn(ctx: ControlContext, machine: MachineRecord, repository: string, digest: string): Promise<boolean> {
  return (await peerRegistryClient(machine, ctx.tls?.agentDispatcher).headManifest(repository, digest)) !== undefined;
}
