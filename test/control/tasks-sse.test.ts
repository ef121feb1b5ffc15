import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createUser } from '../../src/control/auth/api-keys.js';
import { type CatalogPlane, collectTaskEvents, startCatalogPlane, subscribeTaskEvents } from './catalog-harness.js';

/**
 * GET /events/background-task over a real HTTP connection: every change of the operation arrives in
 * order, the terminal event names the outcome and ends the stream, a quiet stream carries heartbeats.
 */

let plane: CatalogPlane;
let key: string;

beforeAll(async () => {
  plane = await startCatalogPlane({ heartbeatMs: 50, throttleMs: 0 });
  key = await createApiKey(plane.ctx.db, (await createUser(plane.ctx.db, { name: 'u', role: 'user', domain: null })).userId);
});
afterAll(async () => plane?.close());

const newTask = async () =>
  await plane.ctx.operations.create({ kind: 'rescan', actor: 'u', artifact: { digest: null, reference: 'r', platform: null, size_bytes: null }, targets: [] });

describe('background task events', () => {
  it('delivers every update in order, heartbeats while quiet, and ends with bgtask_done', async () => {
    const op = await newTask();
    // The updates go out once a heartbeat has arrived on the quiet stream (however slow the machine).
    let heartbeat!: () => void;
    const firstHeartbeat = new Promise<void>((resolve) => (heartbeat = resolve));
    const stream = collectTaskEvents(plane.url, key, op.id, 120_000, undefined, () => heartbeat());
    await firstHeartbeat;
    for (let i = 1; i <= 5; i++) await plane.ctx.operations.setProgress(op.id, i, 5, `step ${i}`);
    await plane.ctx.operations.finish(op.id, { status: 'succeeded' });
    const { events, comments, serverClose } = await stream;
    expect(events.map((e) => e.event)).toEqual([...Array(6).fill('bgtask_updated'), 'bgtask_done']);
    expect(serverClose).toBe(true);
    expect(events.slice(1, 6).map((e) => [e.data.current_progress, e.data.total_progress, e.data.message])).toEqual(
      [1, 2, 3, 4, 5].map((i) => [i, 5, `step ${i}`]),
    );
    expect(events.at(-1)?.data.operation.status).toBe('succeeded');
    expect(comments).toBeGreaterThan(0);
  });

  it('maps failed and cancelled outcomes, also when subscribing after the end', async () => {
    const failed = await newTask();
    await plane.ctx.operations.finish(failed.id, { status: 'failed', error: { code: 'REGISTRY_ERROR', message: 'registry down' } });
    const f = await collectTaskEvents(plane.url, key, failed.id);
    expect(f.events.map((e) => e.event)).toEqual(['bgtask_failed']);
    expect(f.events[0]?.data.message).toBe('REGISTRY_ERROR: registry down');

    const cancelled = await newTask();
    await plane.ctx.operations.finish(cancelled.id, { status: 'cancelled' });
    expect((await collectTaskEvents(plane.url, key, cancelled.id)).events.map((e) => e.event)).toEqual(['bgtask_cancelled']);
  });

  it('counts finished targets as progress for operations with targets', async () => {
    const op = await plane.ctx.operations.create({
      kind: 'preload',
      actor: 'u',
      artifact: { digest: null, reference: 'r', platform: null, size_bytes: null },
      targets: ['a', 'b'],
    });
    const { stream, connected } = subscribeTaskEvents(plane.url, key, op.id);
    await connected;
    await plane.ctx.operations.updateTarget(op.id, 'a', { status: 'present' });
    await plane.ctx.operations.updateTarget(op.id, 'b', { status: 'failed', failure: { code: 'X', message: 'y' } });
    await plane.ctx.operations.finish(op.id);
    const { events } = await stream;
    // A partial success ends as Backend.AI's: bgtask_done, with the failures in `errors`.
    expect(events.map((e) => [e.event, e.data.current_progress, e.data.total_progress])).toEqual([
      ['bgtask_updated', 0, 2],
      ['bgtask_updated', 1, 2],
      ['bgtask_updated', 2, 2],
      ['bgtask_done', 2, 2],
    ]);
    expect((events.at(-1)?.data as { errors?: string[] }).errors).toEqual(['b: X: y']);
    expect(events.at(-1)?.data.operation.status).toBe('partially_failed');
  });

  it('ends with the cancel even when it is stamped before the last progress (a replica whose clock runs ahead wrote that)', async () => {
    const op = await newTask();
    const { stream, connected } = subscribeTaskEvents(plane.url, key, op.id);
    await connected;
    // Progress as another replica writes it, its clock a minute ahead, relayed here as the event bus does.
    const ahead = new Date(Date.now() + 60_000).toISOString();
    await plane.ctx.db.run(sql`UPDATE operations SET progress = ${JSON.stringify({ current: 1, total: 4, message: 'tag 1' })}, updated_at = ${ahead} WHERE id = ${op.id}`);
    await plane.ctx.operations.relayOperation(op.id);
    await plane.ctx.operations.abandon(op.id, 'cancelled', { code: 'CANCELLED', message: 'cancelled by u' }, 'cancelled');
    // A progress write the handler had in flight changes nothing once the end is recorded.
    await plane.ctx.operations.setProgress(op.id, 2, 4, 'tag 2');
    const { events } = await stream;
    expect(events.map((e) => e.event)).toEqual(['bgtask_updated', 'bgtask_updated', 'bgtask_cancelled']);
    expect(events.at(-1)?.data.current_progress).toBe(1);
    expect((await plane.ctx.operations.require(op.id)).progress).toMatchObject({ current: 1, message: 'tag 1' });
  });

  it('refuses without a key, and answers 404 for an unknown task', async () => {
    const op = await newTask();
    expect((await collectTaskEvents(plane.url, 'stk_wrong', op.id)).status).toBe(401);
    expect((await collectTaskEvents(plane.url, key, 'op-unknown')).status).toBe(404);
    expect((await collectTaskEvents(plane.url, key, 'bad id!')).status).toBe(400);
    await plane.ctx.operations.finish(op.id, { status: 'succeeded' });
  });
});

describe('throttling', () => {
  it('coalesces a burst of updates into the latest, and never delays the final event', async () => {
    const throttled = await startCatalogPlane({ throttleMs: 300 });
    try {
      const k = await createApiKey(throttled.ctx.db, (await createUser(throttled.ctx.db, { name: 't', role: 'user' })).userId);
      const op = await throttled.ctx.operations.create({ kind: 'rescan', actor: 't', artifact: { digest: null, reference: 'r', platform: null, size_bytes: null }, targets: [] });
      let sawLast: () => void = () => {};
      const lastSeen = new Promise<void>((resolve) => (sawLast = resolve));
      const { stream, connected } = subscribeTaskEvents(throttled.url, k, op.id, (e) => {
        if (e.data.message === 'step 20') sawLast();
      });
      await connected;
      for (let i = 1; i <= 20; i++) await throttled.ctx.operations.setProgress(op.id, i, 20, `step ${i}`);
      // The throttle delivers the latest state of the burst by itself; only then does the task end.
      await lastSeen;
      await throttled.ctx.operations.finish(op.id, { status: 'succeeded' });
      const { events } = await stream;
      expect(events.length).toBeLessThan(6);
      expect(events.filter((e) => e.event === 'bgtask_updated').at(-1)?.data.message).toBe('step 20');
      expect(events.at(-1)?.event).toBe('bgtask_done');
    } finally {
      await throttled.close();
    }
  });
});
