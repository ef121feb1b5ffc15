import { StowageError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { parseImageConfig } from '../oci/manifest.js';
import type { ControlContext } from './context.js';
import { peerRegistryClient } from './peer-client.js';
import { repositoryOf } from './operations/transfer-plan.js';
import type { Availability, ImageInspect } from './wire.js';

/**
 * inspect: the image's manifests and configs, read from the /v2/ of a machine that holds it (the control
 * plane stores no image data), together with where it is available.
 */

export interface InspectQuery {
  digest?: string | undefined;
  reference?: string | undefined;
  machine?: string | undefined;
}

export async function inspectImage(ctx: ControlContext, q: InspectQuery): Promise<ImageInspect> {
  const present = await ctx.availability.query({ presentOnly: true, machine: q.machine, digest: q.digest });
  const matching = q.reference ? present.filter((r) => r.references.includes(q.reference as string)) : present;
  if (matching.length === 0) {
    const what = [q.digest, q.reference].filter(Boolean).join(' / ');
    throw new StowageError('IMAGE_NOT_FOUND', `no machine${q.machine ? ` "${q.machine}"` : ''} holds ${what}`);
  }
  const online = matching.filter((r) => r.machine_status === 'online');
  const readFrom = online[0];
  if (!readFrom) throw new StowageError('MACHINE_OFFLINE', `every machine holding ${q.digest ?? q.reference} is offline`);
  // A reference may name an index on one machine; the digest to show is what was asked, else the index, else the manifest.
  const digest = (q.digest ?? readFrom.index_digest ?? readFrom.digest) as Digest;
  const machine = await ctx.machines.require(readFrom.machine_id);
  const client = peerRegistryClient(machine, ctx.tls?.agentDispatcher);
  const repo = repositoryOf(readFrom.references);
  const top = await client.getManifest(repo, digest);
  const onMachine = matching.filter((r) => r.machine_id === machine.id);
  const children: Availability[] = top.parsed.kind === 'index' ? onMachine.filter((r) => r.index_digest === digest) : [readFrom];
  const platforms: ImageInspect['platforms'] = [];
  for (const child of children) {
    const fetched = child.digest === digest ? top : await client.getManifest(repo, child.digest);
    if (fetched.parsed.kind !== 'manifest') continue;
    const manifest = fetched.parsed.manifest;
    const configBytes = await client.getSmallBlob(repo, manifest.config.digest as Digest);
    const config = parseImageConfig(configBytes);
    platforms.push({
      digest: fetched.digest,
      platform: child.platform,
      config_digest: manifest.config.digest,
      media_type: fetched.mediaType,
      size_bytes: fetched.bytes.length + manifest.config.size + manifest.layers.reduce((n, l) => n + l.size, 0),
      created: config.created ?? null,
      labels: config.config?.Labels ?? {},
      layers: manifest.layers.map((l) => ({ digest: l.digest, size_bytes: l.size, media_type: l.mediaType })),
    });
  }
  const references = [...new Set(matching.flatMap((r) => r.references))].sort();
  const availability = await ctx.availability.query({ digest });
  return { digest, kind: top.parsed.kind === 'index' ? 'index' : 'manifest', media_type: top.mediaType, references, read_from: machine.id, platforms, availability };
}
