import type { FastifyInstance } from 'fastify';
import { parseImageConfig } from '../../oci/manifest.js';
import type { Platform } from '../../oci/platform.js';
import { parseReference, withDefaultTag } from '../../oci/reference.js';
import type { EngineContext } from '../context.js';
import { decodeRegistryAuth, registryClientFor } from '../registry-auth.js';
import { translatePullError } from './pull.js';

/**
 * GET /distribution/{name}/json (docker-py's inspect_distribution, `docker service`, compose): the registry's
 * descriptor for a reference and the platforms it offers, read from the registry, not the local store.
 */
export function registerDistributionRoutes(app: FastifyInstance, ctx: EngineContext): void {
  app.get('/distribution/*', async (request, reply) => {
    const path = ((request.params as Record<string, string>)['*'] ?? '').replace(/\/+$/, '');
    if (!path.endsWith('/json') || path === '/json') {
      return reply.code(404).header('content-type', 'application/json').send(Buffer.from(JSON.stringify({ message: 'page not found' })));
    }
    const ref = withDefaultTag(parseReference(path.slice(0, -'/json'.length)));
    const auth = decodeRegistryAuth(request.headers['x-registry-auth']);
    try {
      const client = registryClientFor(ctx, ref.domain, auth);
      const fetched = await client.getManifest(ref.path, ref.digest ?? ref.tag ?? 'latest');
      let platforms: Platform[];
      if (fetched.parsed.kind === 'index') {
        platforms = fetched.parsed.index.manifests.flatMap((m) => (m.platform ? [m.platform as Platform] : []));
      } else {
        const config = parseImageConfig(await client.getSmallBlob(ref.path, fetched.parsed.manifest.config.digest));
        platforms = [{ architecture: config.architecture, os: config.os, ...(config.variant ? { variant: config.variant } : {}) }];
      }
      const body = {
        Descriptor: { mediaType: fetched.mediaType, digest: fetched.digest, size: fetched.bytes.length },
        Platforms: platforms,
      };
      return reply.code(200).header('content-type', 'application/json').send(Buffer.from(JSON.stringify(body)));
    } catch (err) {
      throw translatePullError(err, ref);
    }
  });
}
