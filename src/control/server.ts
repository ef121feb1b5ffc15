import type { Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import Fastify, { type FastifyInstance } from 'fastify';
import { instrumentHttp, metricsRoute } from '../metrics/http.js';
import { refuseWithoutCredential } from './auth/early-auth.js';
import type { ControlContext } from './context.js';
import { graphqlRoutes } from './graphql/index.js';
import { dashboardRoutes } from './rest/dashboard-routes.js';
import { installErrorHandler } from './rest/errors.js';
import { imageRoutes } from './rest/image-routes.js';
import { machineRoutes } from './rest/machine-routes.js';
import { operationRoutes } from './rest/operation-routes.js';
import { requireUser } from './rest/guards.js';
import { sessionRoutes } from './rest/session-routes.js';
import { tokenRoutes } from './rest/token-routes.js';
import { taskEventRoutes } from './tasks/sse.js';
import { adminRoutes } from './tenancy/admin-routes.js';
import { keypairRoutes } from './tenancy/keypair-routes.js';

/** Request bodies are JSON and small; the routes that take inventories raise it for themselves. */
const BODY_LIMIT = 1024 * 1024;

/** The control plane's HTTP API: REST under /api/v1, GraphQL at /admin/gql, SSE for background tasks, /token for registry clients; the dashboard at /ui/. */
export async function buildControlApp(ctx: ControlContext, joinToken: string): Promise<FastifyInstance> {
  const tls = ctx.tls;
  const app = Fastify({
    logger: false,
    bodyLimit: BODY_LIMIT,
    // HTTPS with the certificate from the cluster CA. Client certificates are asked for, not required:
    // operators come with API tokens, agents join with the join token before they have one.
    ...(tls
      ? {
          serverFactory: (handler: Parameters<typeof createHttpsServer>[1]) =>
            createHttpsServer({ key: tls.server.keyPem, cert: tls.server.certPem, ca: [tls.ca.certPem], requestCert: true, rejectUnauthorized: false }, handler) as unknown as Server,
        }
      : {}),
  });
  instrumentHttp(app, ctx.metrics, 'control');
  installErrorHandler(app);
  // The CA certificate is public: an agent fetches it once and checks it against its join token's pin.
  if (tls) app.get('/api/v1/ca', async (_request, reply) => reply.type('application/x-pem-file').send(tls.ca.certPem));
  app.addHook('onRequest', async (request) => refuseWithoutCredential(ctx.db, request));
  app.get('/healthz', async () => ({ ok: true }));
  metricsRoute(app, ctx.metrics, async (request) => {
    if (!ctx.config.metrics.anonymous) await requireUser(ctx, request, ['superadmin', 'admin']);
  });
  machineRoutes(app, ctx, joinToken);
  imageRoutes(app, ctx);
  operationRoutes(app, ctx);
  tokenRoutes(app, ctx);
  sessionRoutes(app, ctx);
  dashboardRoutes(app, ctx.config.webDir);
  // GraphQL also registers the rescan/preload/unload handlers with the runner (before resumeAll).
  await app.register(graphqlRoutes, { ctx });
  await app.register(taskEventRoutes, { ctx, heartbeatMs: ctx.config.events.keepaliveMs, throttleMs: ctx.config.events.throttleMs });
  await app.register(adminRoutes, { ctx });
  await app.register(keypairRoutes, { ctx });
  return app;
}
