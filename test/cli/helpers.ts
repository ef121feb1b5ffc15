import { execFile } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import { main } from '../../src/cli/main.js';
import type { OutStream } from '../../src/cli/io.js';
import { freePort } from '../harness/registry.js';

/** Runs stowctl as operators do (bin/stowctl.js) or in-process through main(), with captured output. */

const BIN = fileURLToPath(new URL('../../bin/stowctl.js', import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** An environment without the caller's stowctl settings: no STOWAGE_*, a fresh XDG config home. */
export function cleanEnv(configHome: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  // The user's settings go; STOWAGE_FROM_SOURCE stays, so the CLI under test is this source, never an old dist/.
  for (const k of Object.keys(env)) if ((k.startsWith('STOWAGE_') && k !== 'STOWAGE_FROM_SOURCE') || k === 'DOCKER_HOST') delete env[k];
  return { ...env, XDG_CONFIG_HOME: configHome, ...extra };
}

/** The CLI as a child process. */
export function runCli(args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env, timeout: 60_000, maxBuffer: 16 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

export class Capture implements OutStream {
  text = '';
  constructor(readonly isTTY = false) {}
  write(chunk: string): boolean {
    this.text += chunk;
    return true;
  }
}

/** main() in this process, with captured streams. */
export async function runMain(args: string[], env: NodeJS.ProcessEnv, opts: { tty?: boolean } = {}): Promise<CliResult> {
  const stdout = new Capture();
  const stderr = new Capture(opts.tty ?? false);
  const code = await main(args, { stdout, stderr, env });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

/** A loopback port with nothing listening (a moment ago). */
export const closedPort = freePort;

export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
}

/** A real HTTP server that records every request and answers with `handler` (404 when it returns nothing). */
export async function recordingServer(
  handler: (req: RecordedRequest, res: ServerResponse) => void | Promise<void> = () => {},
): Promise<{ url: string; requests: RecordedRequest[]; connections: () => number; close(): Promise<void>; server: Server }> {
  const requests: RecordedRequest[] = [];
  let connections = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rec = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
      requests.push(rec);
      Promise.resolve(handler(rec, res)).then(
        () => {
          if (!res.headersSent) {
            res.writeHead(404, { 'content-type': 'application/json' });
            res.end(JSON.stringify({ error: { code: 'NOT_FOUND', message: `no route ${rec.method} ${rec.url}` } }));
          }
        },
        (err: unknown) => {
          res.writeHead(500).end(String(err));
        },
      );
    });
  });
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    connections: () => connections,
    server,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export const DIGEST_A = `sha256:${'a'.repeat(64)}`;

/** An image status record as the control plane answers it (one image on machine m1). */
export const STATUS_RECORD = {
  machine_id: 'm1',
  digest: DIGEST_A,
  index_digest: null,
  config_digest: null,
  platform: 'linux/amd64',
  references: ['docker.io/library/app:1'],
  size_bytes: 2048,
  presence: { state: 'present' },
  machine_status: 'online',
  updated_at: '2026-01-01T00:00:00.000Z',
};
