import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { readSse } from '../../src/cli/sse.js';
import { parseControlConfig } from '../../src/control/config.js';
import type { ControlContext } from '../../src/control/context.js';
import { startControl } from '../../src/control/control.js';
import { operationIdOf } from '../../src/control/tasks/ids.js';
import type { Operation } from '../../src/control/wire.js';
import { type TestImageInfo, type TestIndexInfo, makeMultiPlatformLayout, makeTestImage, skopeo } from '../harness/images.js';
import { controlDatabase } from '../harness/postgres.js';
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
      // In the control-postgres project, a fresh PostgreSQL database.
      ...(await controlDatabase()),
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

/** Backend.AI kernel images carry this label; rescans skip images without it. */
export const KERNELSPEC = { 'ai.backend.kernelspec': '1' } as const;

/**
 * Pushes to `host` (every image a Backend.AI kernel image, labelled ai.backend.kernelspec): test/app:1 (resource and accelerator labels), test/multi:1 (linux/amd64 and
 * linux/arm64/v8), test/system:1 (ai.backend.role=SYSTEM), test/old:1, and test/broken:1 whose config blob
 * is then deleted from the registry so its scan fails.
 */
export async function pushLabelledImages(host: string): Promise<LabelledImages> {
  const push = async (repo: string, labels: Record<string, string>): Promise<TestImageInfo> => {
    const dir = await tmpDir('stowage-layout-');
    const img = await makeTestImage(dir, { layers: 1, layerBytes: 512, tag: 'x', labels: { ...KERNELSPEC, ...labels } });
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
    labels: { ...KERNELSPEC, 'ai.backend.accelerators': 'cuda', 'ai.backend.resource.max.mem': '8g' },
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

export interface DockerFormatImages {
  /** Docker v2 schema 2 manifest (skopeo --format v2s2), labelled. */
  v2s2: { manifestDigest: string; configDigest: string };
  /** Docker manifest list (skopeo --all --format v2s2 of a two-platform OCI layout). */
  list: { listDigest: string; children: Array<{ platform: string; manifestDigest: string }> };
}

/**
 * Pushes to `host` the Docker flavours of the manifest kinds: test/v2s2:1 (a Docker v2 schema 2
 * manifest) and test/list:1 (a Docker manifest list of linux/amd64 and linux/arm64/v8). Throws when
 * the registry does not hold the expected media types (the premise of the tests that use them).
 */
export async function pushDockerFormatImages(host: string): Promise<DockerFormatImages> {
  const raw = async (ref: string) => {
    const text = await skopeo(['inspect', '--raw', '--tls-verify=false', `docker://${host}/${ref}`]);
    return { doc: JSON.parse(text) as { mediaType?: string; config?: { digest: string }; manifests?: Array<{ digest: string; platform: { os: string; architecture: string; variant?: string } }> }, digest: `sha256:${createHash('sha256').update(text).digest('hex')}` };
  };
  const dir = await tmpDir('stowage-layout-');
  await makeTestImage(dir, { layers: 1, layerBytes: 512, tag: 'x', labels: { ...KERNELSPEC, 'ai.backend.accelerators': 'cuda', 'ai.backend.resource.min.cpu': '2' } });
  await skopeo(['copy', '--format', 'v2s2', `oci:${dir}:x`, `docker://${host}/test/v2s2:1`]);
  const v2 = await raw('test/v2s2:1');
  if (v2.doc.mediaType !== 'application/vnd.docker.distribution.manifest.v2+json') throw new Error(`test/v2s2:1 is ${v2.doc.mediaType}`);

  const multiDir = await tmpDir('stowage-layout-');
  await makeMultiPlatformLayout(multiDir, ['linux/amd64', 'linux/arm64/v8'], { tag: 'x', layers: 1, labels: { ...KERNELSPEC, 'ai.backend.resource.max.mem': '4g' } });
  await skopeo(['copy', '--all', '--format', 'v2s2', `oci:${multiDir}:x`, `docker://${host}/test/list:1`]);
  const list = await raw('test/list:1');
  if (list.doc.mediaType !== 'application/vnd.docker.distribution.manifest.list.v2+json') throw new Error(`test/list:1 is ${list.doc.mediaType}`);
  return {
    v2s2: { manifestDigest: v2.digest, configDigest: v2.doc.config!.digest },
    list: {
      listDigest: list.digest,
      children: list.doc.manifests!.map((m) => ({
        platform: [m.platform.os, m.platform.architecture, ...(m.platform.variant ? [m.platform.variant] : [])].join('/'),
        manifestDigest: m.digest,
      })),
    },
  };
}

// ---------------------------------------------------------------------------------------------
// A proxy in front of a registry: delays, faults, and a log of what was asked

export interface RegistryProxy {
  /** "http://127.0.0.1:<port>": use as a registry record's url (its name stays the real registry's host). */
  url: string;
  /** "METHOD /path?query" of every request, in arrival order. */
  requests: string[];
  close(): Promise<void>;
}

/**
 * Forwards every request to `target` after `delayMs`; `fault(method, path)` may answer a status of its
 * own instead (404 with a registry error body), to make a tag vanish between tags/list and its GET.
 */
export async function startRegistryProxy(
  target: string,
  opts: { delayMs?: number; fault?: (method: string, path: string) => number | undefined } = {},
): Promise<RegistryProxy> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    const path = req.url ?? '/';
    requests.push(`${req.method} ${path}`);
    void (async () => {
      try {
        if (opts.delayMs) await new Promise((r) => setTimeout(r, opts.delayMs));
        const status = opts.fault?.(req.method ?? 'GET', path.split('?')[0] ?? path);
        if (status !== undefined) {
          req.resume();
          res.writeHead(status, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] }));
          return;
        }
        const headers: Record<string, string | string[]> = {};
        for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && k !== 'host' && k !== 'connection') headers[k] = v;
        const upstream = await request(`${target}${path}`, { method: (req.method ?? 'GET') as 'GET', headers, body: req.method === 'GET' || req.method === 'HEAD' ? null : req });
        const out: Record<string, string | string[]> = {};
        for (const [k, v] of Object.entries(upstream.headers)) if (v !== undefined && k !== 'connection' && k !== 'transfer-encoding') out[k] = v;
        res.writeHead(upstream.statusCode, out);
        for await (const chunk of upstream.body) res.write(chunk);
        res.end();
      } catch (err) {
        res.destroy(err as Error);
      }
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

// ---------------------------------------------------------------------------------------------
// SSE

export interface ReceivedEvent {
  event: string;
  data: { task_id: string; current_progress: number; total_progress: number; message: string; operation: { status: string } };
}

/**
 * Opens GET /events/background-task and collects events until the stream ends (or `timeoutMs`);
 * `onEvent` sees each as it arrives (to act mid-stream).
 */
export async function collectTaskEvents(
  url: string,
  token: string,
  taskId: string,
  timeoutMs = 120_000,
  onEvent?: (e: ReceivedEvent) => void,
  onComment?: () => void,
): Promise<{ status: number; events: ReceivedEvent[]; comments: number; serverClose: boolean }> {
  const res = await request(`${url}/events/background-task?task_id=${encodeURIComponent(taskId)}`, {
    headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' },
    bodyTimeout: timeoutMs,
  });
  if (res.statusCode !== 200) {
    await res.body.dump();
    return { status: res.statusCode, events: [], comments: 0, serverClose: false };
  }
  const events: ReceivedEvent[] = [];
  let comments = 0;
  let serverClose = false;
  const timer = setTimeout(() => res.body.destroy(new Error('SSE stream did not end in time')), timeoutMs);
  try {
    const counted = async function* (body: AsyncIterable<Buffer>) {
      for await (const chunk of body) {
        const seen = (chunk.toString('utf8').match(/^: /gm) ?? []).length;
        comments += seen;
        if (seen > 0) onComment?.();
        yield chunk;
      }
    };
    for await (const ev of readSse(counted(res.body))) {
      // Backend.AI's end-of-stream marker, after the terminal event; it carries no task state.
      if (ev.event === 'server_close') {
        serverClose = true;
        continue;
      }
      const received = { event: ev.event, data: JSON.parse(ev.data) as ReceivedEvent['data'] };
      events.push(received);
      onEvent?.(received);
    }
  } finally {
    clearTimeout(timer);
  }
  return { status: 200, events, comments, serverClose };
}

/** The operation a task ID (a mutation's task_id UUID) names. */
export async function operationOfTask(plane: CatalogPlane, taskId: string): Promise<Operation | undefined> {
  const opId = await operationIdOf(plane.ctx.db, taskId);
  return opId === undefined ? undefined : await plane.ctx.operations.get(opId);
}

/**
 * collectTaskEvents, with `connected` resolving at the first event (the snapshot every subscriber gets):
 * from then on no update can be missed, however long the subscription took; `heartbeat` at the first
 * keepalive comment.
 */
export function subscribeTaskEvents(
  url: string,
  token: string,
  taskId: string,
  onEvent?: (e: ReceivedEvent) => void,
): { connected: Promise<void>; heartbeat: Promise<void>; stream: ReturnType<typeof collectTaskEvents> } {
  let first: () => void = () => {};
  let beat: () => void = () => {};
  const connected = new Promise<void>((resolve) => (first = resolve));
  const heartbeat = new Promise<void>((resolve) => (beat = resolve));
  const stream = collectTaskEvents(
    url,
    token,
    taskId,
    undefined,
    (e) => {
      first();
      onEvent?.(e);
    },
    () => beat(),
  );
  // A refused or ended subscription may have no first event or comment: settle both so the caller sees the stream's answer.
  void stream.then(
    () => (first(), beat()),
    () => (first(), beat()),
  );
  return { connected, heartbeat, stream };
}
