import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Histogram } from 'prom-client';
import { StowageError } from '../errors.js';
import { DURATION_BUCKETS, type MetricsRegistry } from './registry.js';

/**
 * HTTP latency by route, and the GET /metrics route, for any of the daemons' Fastify servers. The route
 * label is the route's pattern (`/api/v1/operations/:id`), never the raw URL: one series per route, however
 * many IDs are asked for; requests no route matched share `unmatched`.
 */

/** Call before any route is registered: every route of the app (plugins included) is timed. */
export function instrumentHttp(app: FastifyInstance, metrics: MetricsRegistry, server: string): void {
  const name = 'stowage_http_request_duration_seconds';
  // One histogram per registry: a daemon with several servers (an agent's peer and Docker API) shares it.
  const latency =
    (metrics.registry.getSingleMetric(name) as Histogram<'server' | 'method' | 'route' | 'status_code'> | undefined) ??
    new Histogram({
    name,
    help: 'HTTP request latency by route pattern, method and status code',
    labelNames: ['server', 'method', 'route', 'status_code'] as const,
    buckets: DURATION_BUCKETS,
    registers: [metrics.registry],
    });
  app.addHook('onResponse', async (request, reply) => {
    latency.observe(
      { server, method: request.method, route: request.routeOptions.url ?? 'unmatched', status_code: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
  });
}

/**
 * GET /metrics in the Prometheus text format. `authorize` throws a StowageError (401/403) for a caller
 * that may not read them; it answers with the daemon's own error shape.
 */
export function metricsRoute(app: FastifyInstance, metrics: MetricsRegistry, authorize: (request: FastifyRequest) => void | Promise<void>): void {
  app.get('/metrics', async (request, reply) => {
    try {
      await authorize(request);
    } catch (err) {
      if (!(err instanceof StowageError)) throw err;
      const headers = err.status === 401 ? { 'www-authenticate': 'Bearer' } : {};
      return reply.code(err.status).headers(headers).send({ error: { code: err.code, message: err.message } });
    }
    const { contentType, body } = await metrics.text();
    return reply.code(200).type(contentType).header('cache-control', 'no-store').send(body);
  });
}
