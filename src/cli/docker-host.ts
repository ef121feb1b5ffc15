import type { Readable } from 'node:stream';
import { Agent, type Dispatcher, request } from 'undici';
import { CliError } from './errors.js';

/**
 * Reads `docker save` output from a Docker Engine API endpoint (dockerd, or a Stowage agent):
 * GET /images/{name}/get, streamed. DOCKER_HOST is unix:///path or tcp://host:port (plain HTTP;
 * https:// is taken as is for endpoints behind TLS).
 */

export const DEFAULT_DOCKER_HOST = 'unix:///var/run/docker.sock';

export interface DockerEndpoint {
  /** Origin to put in request URLs ("http://localhost" for a socket). */
  origin: string;
  socketPath: string | undefined;
  /** As given, for messages. */
  display: string;
}

export function parseDockerHost(raw: string | undefined): DockerEndpoint {
  const value = raw && raw !== '' ? raw : DEFAULT_DOCKER_HOST;
  const bad = (why: string): CliError =>
    new CliError('CONFIG_ERROR', `invalid DOCKER_HOST "${value}": ${why}; expected unix:///path/to/docker.sock or tcp://host:port`, { exitCode: 2 });
  if (value.startsWith('unix://')) {
    const socketPath = value.slice('unix://'.length);
    if (!socketPath.startsWith('/')) throw bad('the socket path must be absolute');
    return { origin: 'http://localhost', socketPath, display: value };
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw bad('not a URL');
  }
  if (url.protocol === 'tcp:' || url.protocol === 'http:') {
    if (!url.port && url.protocol === 'tcp:') throw bad('a port is required');
    return { origin: `http://${url.host}`, socketPath: undefined, display: value };
  }
  if (url.protocol === 'https:') return { origin: `https://${url.host}`, socketPath: undefined, display: value };
  throw bad(`unsupported scheme ${url.protocol}`);
}

/** The image `name` as an archive stream; 404 is IMAGE_NOT_FOUND with the daemon's own message. */
export async function dockerSave(endpoint: DockerEndpoint, name: string): Promise<Readable> {
  const dispatcher: Dispatcher = new Agent({
    ...(endpoint.socketPath ? { connect: { socketPath: endpoint.socketPath } } : {}),
    headersTimeout: 300_000,
    bodyTimeout: 300_000,
  });
  // The name keeps its "/" (the API's path form); ":" and "@" are encoded like any other reserved character.
  const path = `/images/${name.split('/').map(encodeURIComponent).join('/')}/get`;
  let res: Dispatcher.ResponseData;
  try {
    res = await request(endpoint.origin + path, { method: 'GET', dispatcher });
  } catch (err) {
    await dispatcher.close().catch(() => {});
    const e = err as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
    throw new CliError('DOCKER_UNAVAILABLE', `cannot reach the Docker API at ${endpoint.display}: ${e.cause?.code ?? e.code ?? e.message}`, {
      details: { docker_host: endpoint.display },
      cause: err,
    });
  }
  if (res.statusCode !== 200) {
    const text = await readSmall(res.body, 64 * 1024);
    let message = text.trim().slice(0, 200);
    try {
      const m = (JSON.parse(text) as { message?: unknown }).message;
      if (typeof m === 'string') message = m;
    } catch {
      /* not Docker's JSON error: keep the text */
    }
    await dispatcher.close().catch(() => {});
    const code = res.statusCode === 404 ? 'IMAGE_NOT_FOUND' : 'DOCKER_ERROR';
    throw new CliError(code, `the Docker API at ${endpoint.display} cannot export "${name}": ${message || `HTTP ${res.statusCode}`}`, {
      details: { docker_host: endpoint.display, status: res.statusCode },
    });
  }
  // The dispatcher lives as long as the body is read.
  res.body.once('close', () => void dispatcher.close().catch(() => {}));
  return res.body;
}

/** The start of an error body (Docker's are one small JSON object); the rest is dropped. */
async function readSmall(body: Dispatcher.ResponseData['body'], limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      n += chunk.length;
      if (n >= limit) break;
    }
  } catch {
    /* what arrived is enough */
  }
  body.destroy();
  return Buffer.concat(chunks).subarray(0, limit).toString('utf8');
}
