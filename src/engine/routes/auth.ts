import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { StowageError } from '../../errors.js';
import { registryErrorDetails } from '../../registry/client.js';
import type { EngineContext } from '../context.js';
import { decodeRegistryAuth, registryClientFor, registryErrorText, registryHostOf } from '../registry-auth.js';
import { sendError } from '../stream.js';

/** An AuthConfig is a few short strings. */
const MAX_BODY = 64 * 1024;

async function readBody(request: FastifyRequest): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request.raw as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new StowageError('TOO_LARGE', `request body is larger than ${MAX_BODY} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * POST /auth (what `docker login` calls): checks the credentials against the registry — GET /v2/ with
 * them, through the registry's Basic or bearer-token challenge — and stores nothing; the CLI keeps the
 * credentials and sends them as X-Registry-Auth on pull and push.
 */
async function handleAuth(request: FastifyRequest, reply: FastifyReply, ctx: EngineContext): Promise<FastifyReply> {
  let host: string;
  let client;
  try {
    const auth = decodeRegistryAuth((await readBody(request)).trim() || '{}');
    host = registryHostOf(auth?.serveraddress ?? '') || 'docker.io';
    if (!auth?.username && !auth?.identitytoken) throw new StowageError('BAD_REQUEST', 'username is required');
    client = registryClientFor(ctx, host === 'index.docker.io' ? 'docker.io' : host, auth, { fresh: true });
  } catch (err) {
    return sendError(reply, err);
  }
  try {
    await client.ping();
  } catch (err) {
    const refused = registryErrorDetails(err);
    if (refused?.status === 401 || refused?.status === 403) {
      const text = refused.registryCode || refused.registryMessage ? registryErrorText(refused) : 'unauthorized: incorrect username or password';
      return sendError(reply, new StowageError('UNAUTHORIZED', `Get "${client.baseUrl}/v2/": ${text}`), 401);
    }
    return sendError(reply, err);
  }
  return reply.code(200).header('content-type', 'application/json').send(Buffer.from(JSON.stringify({ Status: 'Login Succeeded', IdentityToken: '' })));
}

/** POST /auth. Reads its JSON body itself (the engine app leaves bodies unparsed). */
export function registerAuthRoutes(app: FastifyInstance, ctx: EngineContext): void {
  void app.register(async (child) => {
    child.removeAllContentTypeParsers();
    child.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
    child.post('/auth', (request, reply) => handleAuth(request, reply, ctx));
  });
}
