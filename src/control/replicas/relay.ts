import type { Logger } from 'pino';
import type { Revocations } from '../auth/revocations.js';
import type { OperationRunner } from '../operations/runner.js';
import type { PushParams, UploadWaiters } from '../operations/push.js';
import type { OperationStore } from '../operations/store.js';
import type { EventBus, ReplicaEvent } from './event-bus.js';

/**
 * Connects this replica to the others through the event bus: what happens here is published, what
 * another replica published is acted on here. Operation changes are re-read and emitted on the store's
 * events (only while an SSE stream listens: nothing to do otherwise), one after the other so they reach
 * streams in the order they came; a cancel stops this replica's run of the operation; an upload report
 * wakes the push waiting for it here; a revocation is read in, to be repeated to the agents reporting here.
 * After the listener was reconnected (resync), all of that is re-read, as events may have been missed.
 */
export function relayReplicaEvents(
  bus: EventBus,
  parts: { operations: OperationStore; runner: OperationRunner; uploads: UploadWaiters; revocations: Revocations; log: Logger },
): void {
  const { operations, runner, uploads, revocations, log } = parts;
  operations.onChange = (change) => bus.publish(change);
  runner.onCancelled = (id, by) => bus.publish({ kind: 'cancel', id, by });
  uploads.onUnheard = (id) => bus.publish({ kind: 'upload', id });
  revocations.onRecorded = () => bus.publish({ kind: 'revocations' });

  let queue: Promise<void> = Promise.resolve();
  const relayUpload = async (id: string): Promise<void> => {
    const report = (await operations.params<PushParams>(id)).upload_report;
    if (report) uploads.report(id, report);
  };
  const inOrder = (work: () => Promise<void>): void => {
    queue = queue.then(work).catch((err: unknown) => log.warn({ err }, 'acting on another replica’s event failed'));
  };
  bus.onRemote = (event: ReplicaEvent) => {
    switch (event.kind) {
      case 'operation':
        if (operations.events.listenerCount('changed') > 0) inOrder(() => operations.relayOperation(event.id));
        return;
      case 'target':
        if (operations.events.listenerCount('target') > 0) inOrder(() => operations.relayTarget(event.id, event.machine));
        return;
      case 'cancel':
        runner.cancelledElsewhere(event.id, event.by);
        return;
      case 'revocations':
        inOrder(() => revocations.load());
        return;
      case 'upload':
        inOrder(() => relayUpload(event.id));
        return;
      case 'resync':
        inOrder(async () => {
          // What the lost events would have told: each operation's latest state (an SSE stream whose
          // operation ended meanwhile must still end), cancels of runs here, reports of pushes waiting here,
          // revocations.
          if (operations.events.listenerCount('changed') > 0) {
            for (const id of await operations.changedSince(event.since)) await operations.relayOperation(id);
          }
          for (const id of await runner.runningHereEndedElsewhere()) runner.cancelledElsewhere(id, 'another replica');
          for (const id of uploads.waitingFor()) await relayUpload(id);
          await revocations.load();
        });
        return;
    }
  };
}
