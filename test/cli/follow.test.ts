import type { ServerResponse } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Operation, TargetResult } from '../../src/control/wire.js';
import { RegistryClient } from '../../src/registry/client.js';
import { makeImageTar } from '../harness/images.js';
import { type TestRegistry, startRegistry } from '../harness/registry.js';
import { tmpDir } from '../harness/tmp.js';
import { DIGEST_A, type RecordedRequest, cleanEnv, recordingServer, runMain } from './helpers.js';

/**
 * distribute and push driven through main(), against a stand-in for the control plane that speaks the
 * REST + SSE contract (the real one is tested end to end with the cluster), and a real registry that
 * receives the push upload.
 */

const now = '2024-05-01T12:00:00Z';

function target(machine_id: string, status: TargetResult['status'], bytes = 0, extra: Partial<TargetResult> = {}): TargetResult {
  return { machine_id, status, bytes_transferred: bytes, bytes_total: 4096, started_at: now, finished_at: null, ...extra };
}

function operation(kind: Operation['kind'], status: Operation['status'], targets: TargetResult[], stage = 'transferring'): Operation {
  return {
    id: `op-${kind}`,
    kind,
    status,
    stage,
    actor: 'test',
    artifact: { digest: DIGEST_A, reference: null, platform: null, size_bytes: 4096 },
    source_machine: 'm1',
    targets,
    progress: { current: 0, total: 0, message: '' },
    created_at: now,
    updated_at: now,
    finished_at: null,
  };
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

function sse(res: ServerResponse, events: Array<[string, Operation]>, end: boolean): void {
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  for (const [event, op] of events) {
    res.write(`event: ${event}\ndata: ${JSON.stringify({ task_id: op.id, current_progress: 0, total_progress: 0, message: '', operation: op })}\n\n`);
  }
  if (end) res.end();
}

describe('stowctl distribute and push (following an operation)', () => {
  let reg: TestRegistry;
  let env: NodeJS.ProcessEnv;
  /** The scripted operation states, by kind. */
  const script = {
    running: operation('distribute', 'running', [target('m2', 'running', 1024), target('m3', 'pending')]),
    final: operation('distribute', 'succeeded', [target('m2', 'present', 4096, { finished_at: now }), target('m3', 'skipped_present', 0)], 'done'),
  };
  let subscriptions = 0;
  let uploadFinished: RecordedRequest | undefined;
  let srv: Awaited<ReturnType<typeof recordingServer>>;

  beforeAll(async () => {
    reg = await startRegistry({ htpasswd: { user: 'grant-user', password: 'grant-pass' } });
    env = cleanEnv(await tmpDir('stowctl-cfg-'), { STOWAGE_TOKEN: 'stk_test' });
    srv = await recordingServer((req, res) => {
      const url = new URL(req.url, 'http://x');
      if (req.headers['authorization'] !== 'Bearer stk_test') return json(res, 401, { error: { code: 'UNAUTHORIZED', message: 'bad token' } });
      if (req.method === 'POST' && url.pathname === '/api/v1/operations/distribute') {
        const body = JSON.parse(req.body) as { to: string[] };
        if (body.to.includes('ghost')) return json(res, 404, { error: { code: 'MACHINE_NOT_FOUND', message: 'no machine ghost' } });
        return json(res, 202, { operation: operation('distribute', 'pending', body.to.map((m) => target(m, 'pending')), 'created') });
      }
      if (req.method === 'POST' && url.pathname === '/api/v1/operations/push') {
        const password = JSON.parse(req.body).to.includes('expired') ? 'expired' : 'grant-pass';
        const upload = { machine_id: 'm2', registry_url: reg.url, repository: 'team/app', tag: '1', username: 'grant-user', password, expires_at: now };
        return json(res, 201, { operation: operation('push', 'running', [target('m2', 'running'), target('m3', 'pending')], 'uploading'), upload });
      }
      if (req.method === 'POST' && url.pathname === '/api/v1/operations/op-push/upload-finished') {
        uploadFinished = req;
        return json(res, 200, { operation: operation('push', 'running', [target('m2', 'present', 4096), target('m3', 'running')]) });
      }
      if (url.pathname === '/api/v1/operations/op-distribute/events') {
        subscriptions++;
        // The first stream breaks off mid-way (a restarting control plane): stowctl must reconnect.
        if (subscriptions === 1) return sse(res, [['bgtask_updated', script.running]], true);
        return sse(res, [['bgtask_updated', script.running], [script.final.status === 'succeeded' ? 'bgtask_done' : 'bgtask_failed', script.final]], true);
      }
      if (url.pathname === '/api/v1/operations/op-distribute') return json(res, 200, { operation: script.running });
      if (url.pathname === '/api/v1/operations/op-push/events') {
        return sse(res, [['bgtask_done', operation('push', 'succeeded', [target('m2', 'present', 4096), target('m3', 'present', 4096)], 'done')]], true);
      }
    });
  });
  afterAll(async () => {
    await srv?.close();
    await reg?.stop();
  });

  const base = () => ['--host', srv.url];

  it('distribute follows the events (reconnecting once), prints lines when not a TTY and a result table, exit 0', async () => {
    subscriptions = 0;
    const r = await runMain([...base(), 'image', 'distribute', '--digest', DIGEST_A, '--from', 'm1', '--to', 'm2,m3'], env);
    expect(r.code, r.stderr).toBe(0);
    expect(subscriptions).toBe(2);
    expect(r.stderr).toContain('op-distribute: m2 running');
    expect(r.stderr).toContain('op-distribute: m3 skipped_present, already there');
    expect(r.stdout).toBe(
      ['Operation op-distribute succeeded', 'MACHINE   STATUS            BYTES      ERROR', 'm2        present           4.00 KiB', 'm3        skipped_present   0 B', ''].join('\n'),
    );
    const create = srv.requests.find((q) => q.url === '/api/v1/operations/distribute')!;
    expect(JSON.parse(create.body)).toEqual({ digest: DIGEST_A, from: 'm1', to: ['m2', 'm3'] });
  });

  it('draws progress bars on a TTY', async () => {
    const r = await runMain([...base(), 'image', 'distribute', '--digest', DIGEST_A, '--from', 'm1', '--to', 'm2'], env, { tty: true });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/m2 +[█░]+ +4\.00 KiB \/ 4\.00 KiB/);
    expect(r.stderr).not.toContain('op-distribute: m2');
  });

  it('exits 1 with the final operation as JSON when a target failed', async () => {
    const saved = script.final;
    script.final = operation('distribute', 'partially_failed', [
      target('m2', 'present', 4096),
      target('m3', 'failed', 0, { failure: { code: 'MACHINE_OFFLINE', message: 'm3 stopped answering', stage: 'blobs' } }),
    ]);
    try {
      const r = await runMain(['--json', ...base(), 'image', 'distribute', '--digest', DIGEST_A, '--from', 'm1', '--to', 'm2', '--to', 'm3'], env);
      expect(r.code).toBe(1);
      expect(r.stderr).toBe('');
      const out = JSON.parse(r.stdout) as { operation: Operation };
      expect(out.operation.status).toBe('partially_failed');
      expect(out.operation.targets[1]?.failure?.code).toBe('MACHINE_OFFLINE');
    } finally {
      script.final = saved;
    }
  });

  it("passes the control plane's error code through, exit 1 (2 for a refused token)", async () => {
    const r = await runMain(['--json', ...base(), 'image', 'distribute', '--digest', DIGEST_A, '--from', 'm1', '--to', 'ghost'], env);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toEqual({ error: { code: 'MACHINE_NOT_FOUND', message: 'no machine ghost' } });

    const bad = await runMain([...base(), '--token', 'wrong', 'machine', 'list'], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe('stowctl: bad token [UNAUTHORIZED]\n');
  });

  it('push uploads to the granted registry with its credentials, reports the upload, then follows', async () => {
    const { tar, image } = await makeImageTar('team/app:1', { layers: 3, layerBytes: 50_000 });
    const r = await runMain([...base(), 'image', 'push', 'team/app:1', '--archive', tar, '--to', 'm2', '--to', 'm3'], env);
    expect(r.code, r.stderr).toBe(0);
    const push = JSON.parse(srv.requests.find((q) => q.url === '/api/v1/operations/push')!.body);
    expect(push).toMatchObject({ reference: 'docker.io/team/app:1', to: ['m2', 'm3'], platform: 'linux/amd64' });

    // The registry holds exactly what was announced: the manifest by the tag of the grant, with the same image ID.
    const client = new RegistryClient({ host: reg.host, credentials: { username: 'grant-user', password: 'grant-pass' } });
    const got = await client.getManifest('team/app', '1');
    expect(got.digest).toBe(push.digest);
    expect(got.parsed.kind === 'manifest' && got.parsed.manifest.config.digest).toBe(image.configDigest);

    const finished = JSON.parse(uploadFinished!.body);
    expect(finished.outcome).toBe('uploaded');
    expect(finished.bytes_transferred).toBeGreaterThan(3 * 50_000);
    expect(r.stderr).toMatch(/upload → m2: layer [0-9a-f]{12} pushed/);
    expect(r.stdout).toContain('Operation op-push succeeded');

    // Pushed again, the registry has every layer: nothing is sent.
    const again = await runMain([...base(), 'image', 'push', 'team/app:1', '--archive', tar, '--to', 'm2'], env);
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(uploadFinished!.body)).toEqual({ outcome: 'uploaded', bytes_transferred: 0 });
  });

  it('a refused upload is reported to the control plane as failed, and exits 1', async () => {
    const { tar } = await makeImageTar('team/app:2', { layers: 1 });
    const r = await runMain(['--json', ...base(), 'image', 'push', 'team/app:2', '--archive', tar, '--to', 'expired'], env);
    expect(r.code).toBe(1);
    const out = JSON.parse(r.stdout) as { error: { code: string; message: string; details: Record<string, unknown> } };
    expect(out.error.code).toBe('UNAUTHORIZED');
    expect(out.error.message).toMatch(/^upload to m2 failed: /);
    expect(out.error.details).toMatchObject({ operation_id: 'op-push', stage: 'upload' });
    const finished = JSON.parse(uploadFinished!.body);
    expect(finished).toMatchObject({ outcome: 'failed', failure: { code: 'UNAUTHORIZED', stage: 'upload' } });
  });
});
