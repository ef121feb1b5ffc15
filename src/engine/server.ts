import { chmod, lstat, rm } from 'node:fs/promises';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { type Server as HttpsServer, createServer as createHttpsServer } from 'node:https';
import type { ServingTls } from '../cluster/tls-server.js';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply } from 'fastify';
import { isStowageError } from '../errors.js';
import type { EngineContext } from './context.js';
import { register as registerCreate } from './routes/create.js';
import { register as registerImages } from './routes/images.js';
import { API_VERSION, MIN_API_VERSION, register as registerSystem } from './routes/system.js';
import { registerAuthRoutes } from './routes/auth.js';
import { registerBuildRoutes } from './routes/build.js';
import { registerDistributionRoutes } from './routes/distribution.js';
import { registerSearchRoutes } from './routes/search.js';
import { checkQueryBounds, MAX_QUERY_PARAM_BYTES } from './params.js';
import { errorMessageOf, errorStatusOf } from './stream.js';

/** The Docker Engine API version served, and the oldest one accepted. */
export { API_VERSION, MIN_API_VERSION };

/** dockerd's route prefix `/v{version:[0-9.]+}`. */
const VERSION_PREFIX_RE = /^\/v([0-9.]+)(?=\/|$|\?)/;

/** Docker's versions.compare: dot-separated numbers compared in turn, a missing or non-numeric part is 0. */
function compareVersions(a: string, b: string): number {
  const pa = a.split('.');
  const pb = b.split('.');
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = Number.parseInt(pa[i] ?? '0', 10) || 0;
    const y = Number.parseInt(pb[i] ?? '0', 10) || 0;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

/**
 * Largest request head (request line and headers) the engine's servers accept: room for a query parameter
 * of MAX_QUERY_PARAM_BYTES (which the app refuses with a 400 of its own) plus X-Registry-Auth and friends.
 * Node's default (16 KiB) would cut a long filters or buildargs off with a bare 431.
 */
export const MAX_REQUEST_HEAD_BYTES = 4 * MAX_QUERY_PARAM_BYTES;

declare module 'node:http' {
  interface IncomingMessage {
    /** The `/v1.xx` prefix the client used, when it used one. */
    stowageApiVersion?: string;
  }
}

/** Headers dockerd puts on every answer (set on the raw response so hijacked streams carry them too). */
function commonHeaders(ctx: EngineContext): Record<string, string> {
  return {
    'Api-Version': API_VERSION,
    'Docker-Experimental': 'false',
    Ostype: 'linux',
    Server: `Stowage/${ctx.version}`,
  };
}

/**
 * The Docker Engine API v1.41 (image endpoints) over one machine's store. Every route answers both
 * unversioned and under `/v1.xx/`; errors are `{"message": …}` with Docker's status codes; request bodies
 * (tar archives, build contexts) are left unread for the handlers to stream.
 */
export interface EngineAppOptions {
  /** Called with the app before any hook or route is added (the agent times every request for its metrics). */
  instrument?: ((app: FastifyInstance) => void) | undefined;
}

export async function buildEngineApp(ctx: EngineContext, opts: EngineAppOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: false,
    // Image names carry ':' and '/', digests '@': keep paths as sent.
    routerOptions: { ignoreDuplicateSlashes: false, maxParamLength: 2048 },
    // Errors the router raises before any hook (a malformed percent-escape, a bad Content-Type header)
    // answer in Docker's shape too, not fastify's {error, code, message, statusCode}.
    frameworkErrors(err, _request, rawReply) {
      const s = (err as FastifyError).statusCode;
      const reply = rawReply as unknown as FastifyReply;
      void reply
        .code(typeof s === 'number' && s >= 400 && s < 600 ? s : 400)
        .header('content-type', 'application/json')
        .send(Buffer.from(JSON.stringify({ message: errorMessageOf(err) })));
    },
    rewriteUrl(req) {
      const url = req.url ?? '/';
      const m = VERSION_PREFIX_RE.exec(url);
      if (!m) return url;
      req.stowageApiVersion = m[1];
      const rest = url.slice(m[0].length);
      return rest === '' || rest.startsWith('?') ? `/${rest}` : rest;
    },
  });

  opts.instrument?.(app);
  const headers = commonHeaders(ctx);
  app.addHook('onRequest', async (request, reply) => {
    for (const [k, v] of Object.entries(headers)) reply.raw.setHeader(k, v);
    const v = request.raw.stowageApiVersion;
    if (v !== undefined) {
      if (compareVersions(v, API_VERSION) > 0) {
        return reply
          .code(400)
          .header('content-type', 'application/json')
          .send(Buffer.from(JSON.stringify({ message: `client version ${v} is too new. Maximum supported API version is ${API_VERSION}` })));
      }
      if (compareVersions(v, MIN_API_VERSION) < 0) {
        return reply
          .code(400)
          .header('content-type', 'application/json')
          .send(
            Buffer.from(
              JSON.stringify({
                message: `client version ${v} is too old. Minimum supported API version is ${MIN_API_VERSION}, please upgrade your client to a newer version`,
              }),
            ),
          );
      }
    }
    return undefined;
  });

  // Query values are bounded before any handler parses them (a body, if any, is left unread).
  app.addHook('preValidation', async (request) => {
    checkQueryBounds((request.query ?? {}) as Record<string, unknown>);
  });

  // Bodies stay unread: handlers stream request.raw (docker load/import/build send tars, often without a type).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));

  app.setErrorHandler((err: FastifyError | Error, _request, reply) => {
    const status = errorStatusOf(err);
    if (reply.sent || reply.raw.headersSent) {
      reply.raw.destroy();
      return;
    }
    void reply.code(status).header('content-type', 'application/json').send(Buffer.from(JSON.stringify({ message: errorMessageOf(err) })));
  });
  app.setNotFoundHandler((_request, reply) => {
    void reply.code(404).header('content-type', 'application/json').send(Buffer.from(JSON.stringify({ message: 'page not found' })));
  });

  registerSystem(app, ctx);
  registerCreate(app, ctx);
  registerImages(app, ctx);
  registerSearchRoutes(app, ctx);
  registerAuthRoutes(app, ctx);
  registerBuildRoutes(app, ctx);
  registerDistributionRoutes(app, ctx);
  await app.ready();
  return app;
}

export interface EngineListenOptions {
  /** A unix socket path (replaced when a stale socket is there). */
  socketPath?: string;
  tcp?: { host: string; port: number };
  /**
   * Serve TCP over TLS taking only clients with a certificate from the cluster CA (dockerd's --tlsverify);
   * null: not yet (every handshake fails until setCertificate).
   */
  tls?: ServingTls | null;
}

export interface EngineListener {
  /** `unix:///path` and/or `tcp://host:port`, usable as DOCKER_HOST. */
  addresses: string[];
  /** A new certificate for the TLS listener (renewal). */
  setCertificate(tls: ServingTls): void;
  close(): Promise<void>;
}

async function removeStaleSocket(path: string): Promise<void> {
  try {
    const st = await lstat(path);
    if (st.isSocket()) await rm(path, { force: true });
  } catch {
    /* not there */
  }
}

function listenServer(server: Server, opts: { path: string } | { host: string; port: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/**
 * Serves the app on a unix socket and/or a TCP address. Each gets its own HTTP server routed into the app;
 * close() stops them (and the app).
 */
export async function listenEngine(app: FastifyInstance, opts: EngineListenOptions): Promise<EngineListener> {
  if (!opts.socketPath && !opts.tcp) throw new Error('listenEngine: give socketPath and/or tcp');
  await app.ready();
  const servers: Server[] = [];
  const addresses: string[] = [];
  let tlsServer: HttpsServer | undefined;
  const make = (tls?: ServingTls | null): Server => {
    const handler = (req: IncomingMessage, res: ServerResponse): void => app.routing(req, res);
    let s: Server;
    if (tls !== undefined) {
      const key = tls ? { key: tls.key, cert: tls.cert, ca: [tls.ca] } : {};
      tlsServer = createHttpsServer({ maxHeaderSize: MAX_REQUEST_HEAD_BYTES, requestCert: true, rejectUnauthorized: true, ...key }, handler);
      s = tlsServer as unknown as Server;
    } else {
      s = createServer({ maxHeaderSize: MAX_REQUEST_HEAD_BYTES }, handler);
    }
    s.keepAliveTimeout = 65_000;
    servers.push(s);
    return s;
  };
  try {
    if (opts.socketPath) {
      await removeStaleSocket(opts.socketPath);
      const s = make();
      await listenServer(s, { path: opts.socketPath });
      await chmod(opts.socketPath, 0o660).catch(() => undefined);
      addresses.push(`unix://${opts.socketPath}`);
    }
    if (opts.tcp) {
      const s = make(opts.tls);
      await listenServer(s, { host: opts.tcp.host, port: opts.tcp.port });
      const a = s.address();
      const port = a && typeof a === 'object' ? a.port : opts.tcp.port;
      const host = opts.tcp.host.includes(':') ? `[${opts.tcp.host}]` : opts.tcp.host;
      addresses.push(`tcp://${host}:${port}`);
    }
  } catch (err) {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(() => r(undefined)))));
    throw err;
  }
  return {
    addresses,
    setCertificate(tls) {
      tlsServer?.setSecureContext({ key: tls.key, cert: tls.cert, ca: [tls.ca] });
    },
    async close() {
      await Promise.all(
        servers.map(
          (s) =>
            new Promise<void>((resolve) => {
              s.close(() => resolve());
              s.closeAllConnections();
            }),
        ),
      );
      if (opts.socketPath) await removeStaleSocket(opts.socketPath);
      await app.close();
    },
  };
}

export { errorMessageOf };
