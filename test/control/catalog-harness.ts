import { request } from 'undici';
import { readSse } from '../../src/cli/sse.js';
import { parseControlConfig } from '../../src/control/config.js';
import type { ControlContext } from '../../src/control/context.js';
import { startControl } from '../../src/control/control.js';
import { type TestImageInfo, type TestIndexInfo, makeMultiPlatformLayout, makeTestImage, skopeo } from '../harness/images.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * A control plane in the test process: real SQLite under a temp dir, the real stores and runner, and
 * the catalog's HTTP plugins (GraphQL, task SSE, admin REST) served on a loopback port.
 */

export interface CatalogPlane {
  url: string;
  ctx: ControlContext;
  /** POST /admin/gql with a Bearer key (or none). */
  gql<T = Record<string, unknown>>(
    token: string | undefined,
    query: string,
    variables?: Record<string, unknown>,
  ): Promise<{ status: number; body: { data?: T | null; errors?: Array<{ message: string; extensions?: { code?: string } }> } }>;
  rest<T = unknown>(token: string, method: 'GET' | 'PUT' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<{ status: number; body: T }>;
  close(): Promise<void>;
}

export async function startCatalogPlane(opts: { heartbeatMs?: number; throttleMs?: number; joinToken?: string; offlineAfterMs?: number } = {}): Promise<CatalogPlane> {
  const dir = await tmpDir('stowage-catalog-');
  const control = await startControl(
    parseControlConfig({
      dataDir: dir,
      listen: { host: '127.0.0.1', port: 0 },
      heartbeatIntervalMs: 500,
      offlineAfterMs: opts.offlineAfterMs ?? 5_000,
      ...(opts.joinToken ? { joinToken: opts.joinToken } : {}),
      events: { ...(opts.heartbeatMs !== undefined ? { keepaliveMs: opts.heartbeatMs } : {}), ...(opts.throttleMs !== undefined ? { throttleMs: opts.throttleMs } : {}) },
    }),
  );
  const { url, ctx } = control;

  const send = async (token: string | undefined, method: string, path: string, body?: unknown) => {
    const res = await request(`${url}${path}`, {
      method: method as 'GET',
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
    const text = await res.body.text();
    return { status: res.statusCode, body: text ? (JSON.parse(text) as never) : (undefined as never) };
  };

  return {
    url,
    ctx,
    gql: (token, query, variables) => send(token, 'POST', '/admin/gql', { query, ...(variables ? { variables } : {}) }),
    rest: (token, method, path, body) => send(token, method, path, body),
    close: () => control.close(),
  };
}

// ---------------------------------------------------------------------------------------------
// A registry holding labelled images

export interface LabelledImages {
  app: TestImageInfo;
  multi: TestIndexInfo;
  system: TestImageInfo;
  broken: TestImageInfo;
  old: TestImageInfo;
}

/**
 * Pushes to `host`: test/app:1 (resource and accelerator labels), test/multi:1 (linux/amd64 and
 * linux/arm64/v8), test/system:1 (ai.backend.role=SYSTEM), test/old:1, and test/broken:1 whose config blob
 * is then deleted from the registry so its scan fails.
 */
export async function pushLabelledImages(host: string): Promise<LabelledImages> {
  const push = async (repo: string, labels: Record<string, string>): Promise<TestImageInfo> => {
    const dir = await tmpDir('stowage-layout-');
    const img = await makeTestImage(dir, { layers: 1, layerBytes: 512, tag: 'x', labels });
    await skopeo(['copy', `oci:${dir}:x`, `docker://${host}/${repo}`]);
    return img;
  };
  const app = await push('test/app:1', {
    'ai.backend.resource.min.cpu': '1',
    'ai.backend.resource.max.cpu': '4',
    'ai.backend.resource.min.mem': '256m',
    'ai.backend.resource.min.cuda.device': '1',
    'ai.backend.accelerators': 'cuda, rocm',
    'org.opencontainers.image.title': 'The App',
  });
  const multiDir = await tmpDir('stowage-layout-');
  const multi = await makeMultiPlatformLayout(multiDir, ['linux/amd64', 'linux/arm64/v8'], {
    tag: 'x',
    layers: 1,
    labels: { 'ai.backend.accelerators': 'cuda', 'ai.backend.resource.max.mem': '8g' },
  });
  await skopeo(['copy', '--all', `oci:${multiDir}:x`, `docker://${host}/test/multi:1`]);
  const system = await push('test/system:1', { 'ai.backend.role': 'SYSTEM' });
  const old = await push('test/old:1', {});
  const broken = await push('test/broken:1', {});
  const res = await request(`http://${host}/v2/test/broken/blobs/${broken.configDigest}`, { method: 'DELETE' });
  await res.body.dump();
  if (res.statusCode !== 202) throw new Error(`deleting the config blob of test/broken answered ${res.statusCode}`);
  return { app, multi, system, broken, old };
}

// ---------------------------------------------------------------------------------------------
// SSE

export interface ReceivedEvent {
  event: string;
  data: { task_id: string; current_progress: number; total_progress: number; message: string; operation: { status: string } };
}

/** Opens GET /events/background-task and collects events until the stream ends (or `timeoutMs`). */
export async function collectTaskEvents(url: string, token: string, taskId: string, timeoutMs = 30_000): Promise<{ status: number; events: ReceivedEvent[]; comments: number }> {
  const res = await request(`${url}/events/background-task?task_id=${encodeURIComponent(taskId)}`, {
    headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' },
    bodyTimeout: timeoutMs,
  });
  if (res.statusCode !== 200) {
    await res.body.dump();
    return { status: res.statusCode, events: [], comments: 0 };
  }
  const events: ReceivedEvent[] = [];
  let comments = 0;
  const timer = setTimeout(() => res.body.destroy(new Error('SSE stream did not end in time')), timeoutMs);
  try {
    const counted = async function* (body: AsyncIterable<Buffer>) {
      for await (const chunk of body) {
        comments += (chunk.toString('utf8').match(/^: /gm) ?? []).length;
        yield chunk;
      }
    };
    for await (const ev of readSse(counted(res.body))) events.push({ event: ev.event, data: JSON.parse(ev.data) as ReceivedEvent['data'] });
  } finally {
    clearTimeout(timer);
  }
  return { status: 200, events, comments };
}
