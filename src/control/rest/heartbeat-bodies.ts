import type { FastifyInstance, FastifyRequest } from 'fastify';
import { type Heartbeat, heartbeatSchema } from '../wire.js';
import { parseWith } from './errors.js';

/**
 * Heartbeat bodies, read as text: an agent sends the same body beat after beat, so a body equal (byte for
 * byte) to the last valid one of its machine is not parsed and validated again (with 1,000 machines,
 * JSON parsing and schema validation were a seventh of the control plane's CPU time per heartbeat).
 */
export class HeartbeatBodies {
  /** The last valid body of each machine (one per machine: a few hundred bytes each). */
  private readonly last = new Map<string, { text: string; beat: Heartbeat }>();
  private parseJson: (request: FastifyRequest, text: string) => unknown = () => {
    throw new Error('HeartbeatBodies.readAsText was not called for this route');
  };

  /** Routes registered in `scope` receive their application/json bodies as text: a scope for heartbeats only. */
  readAsText(scope: FastifyInstance): void {
    const strict = scope.getDefaultJsonParser('error', 'error');
    scope.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, text, done) => done(null, text));
    // Fastify's own parser (prototype poisoning refused, 400 for what is not JSON); it answers at once.
    this.parseJson = (request, text) => {
      let result: { err: Error | null; body: unknown } | undefined;
      void strict(request, text, (err, body) => (result = { err, body }));
      if (!result) throw new Error("fastify's JSON parser did not answer at once");
      if (result.err) throw result.err;
      return result.body;
    };
  }

  /** The heartbeat in the request's body (its text, see readAsText); a 400 when it is not one. Equal bodies give the same object: not to be changed. */
  parse(id: string, request: FastifyRequest): Heartbeat {
    const text = typeof request.body === 'string' ? request.body : undefined;
    const last = this.last.get(id);
    if (last !== undefined && last.text === text) return last.beat;
    const beat = parseWith(heartbeatSchema, text === undefined ? request.body : this.parseJson(request, text));
    if (text !== undefined) this.last.set(id, { text, beat });
    return beat;
  }

  /** Forgets a machine (revoked). */
  forget(id: string): void {
    this.last.delete(id);
  }
}
