import { mkdir, open } from 'node:fs/promises';
import { join } from 'node:path';
import Fastify from 'fastify';
import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createUser } from '../../src/control/auth/api-keys.js';
import { openDatabase } from '../../src/control/db/database.js';
import { Machines } from '../../src/control/machines.js';
import { installErrorHandler } from '../../src/control/rest/errors.js';
import type { JoinRequest } from '../../src/control/wire.js';
import { run, runOk } from '../harness/run.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * Issue 13, defect 8 on the control plane: with its disk full, every machine went offline (status came
 * from the database's last_seen_at, and the heartbeat UPDATE failed) and writes answered 500. The database
 * lives here on a 4 MiB tmpfs filled to the last byte, with the WAL truncated so the next write must grow it.
 */

const OFFLINE_AFTER_MS = 10_000;
let mountPoint: string;

function joinReq(name: string): JoinRequest {
  return { join_token: 'x', name, agent_url: 'http://127.0.0.1:1', platform: 'linux/amd64', labels: {}, inventory: [], inventory_seq: 1 };
}

/** Writes a file until the disk refuses (ENOSPC). */
async function fillDisk(dir: string): Promise<void> {
  const fh = await open(join(dir, 'filler'), 'w');
  const chunk = Buffer.alloc(64 * 1024, 1);
  try {
    for (;;) await fh.write(chunk);
  } catch (err) {
    expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC');
  }
  // The last partial chunk may have fitted a few bytes at a time: fill to the last byte.
  try {
    for (;;) await fh.write(Buffer.alloc(1, 1));
  } catch {
    /* full */
  } finally {
    await fh.close();
  }
}

beforeAll(async () => {
  mountPoint = join(await tmpDir('stowage-control-full-'), 'mnt');
  await mkdir(mountPoint);
  await runOk('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mountPoint]);
});
afterAll(async () => {
  await run('umount', ['-l', mountPoint]);
});
afterEach(() => {
  vi.useRealTimers();
});

describe('the control plane on a full disk', () => {
  it('keeps a heartbeating machine online though its heartbeat cannot be written; a write that needs space is 507', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const db = await openDatabase(join(mountPoint, 'control.db'));
    const machines = new Machines(db, OFFLINE_AFTER_MS);
    const lost: unknown[] = [];
    machines.onWriteLost = (err) => lost.push(err);
    machines.listening();
    await machines.join(joinReq('m1'));
    await machines.join(joinReq('m2'));
    const recorded = async () => (await db.get<{ last_seen_at: string }>(sql`SELECT last_seen_at FROM machines WHERE id = ${'m1'}`))?.last_seen_at;
    const seenBefore = await recorded();

    await db.all(sql`PRAGMA wal_checkpoint(TRUNCATE)`);
    await fillDisk(mountPoint);

    // Well past the offline window: m1 calls in, m2 does not.
    vi.setSystemTime(Date.now() + OFFLINE_AFTER_MS * 2);
    await machines.heartbeat('m1', {});
    expect(lost).toHaveLength(1);
    expect(await recorded()).toBe(seenBefore); // the write really failed
    expect((await machines.get('m1'))?.status).toBe('online');
    expect((await machines.get('m2'))?.status).toBe('offline');
    expect(await machines.statuses()).toEqual(new Map([['m1', 'online'], ['m2', 'offline']]));

    // Without another heartbeat it goes offline in its turn: memory is not a licence to stay online.
    vi.setSystemTime(Date.now() + OFFLINE_AFTER_MS * 2);
    expect((await machines.get('m1'))?.status).toBe('offline');

    // A write that needs room fails with SQLite's disk-full error, which the REST edge answers as 507.
    let failure: unknown;
    try {
      await createUser(db, { name: 'new-user-on-a-full-disk', role: 'user' });
    } catch (err) {
      failure = err;
    }
    expect((failure as { code?: string }).code).toMatch(/^SQLITE_FULL/);
    const app = Fastify();
    installErrorHandler(app);
    app.post('/write', async () => {
      throw failure;
    });
    const res = await app.inject({ method: 'POST', url: '/write' });
    expect(res.statusCode).toBe(507);
    expect(res.json()).toEqual({
      error: { code: 'INSUFFICIENT_STORAGE', message: expect.stringMatching(/^no space left on the disk holding the control plane's database \(SQLITE_FULL\)/) },
    });
    await app.close();
    await db.close();
  });
});
