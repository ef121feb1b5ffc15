import { z } from 'zod';
import type { CommandContext } from './context.js';
import { CliError } from './errors.js';
import { formatBytes, formatList, formatTable } from './output.js';
import { digestCell } from './render.js';
import type { ListView } from './view.js';

/**
 * The catalog commands' side of the admin GraphQL API (POST /admin/gql): the request, the shapes of
 * the answers and how they print. GraphQL errors keep their code (FORBIDDEN, …).
 */

const gqlErrorSchema = z.object({ message: z.string(), extensions: z.object({ code: z.string().optional() }).passthrough().optional() });
const gqlResponseSchema = z.object({ data: z.record(z.unknown()).nullish(), errors: z.array(gqlErrorSchema).optional() });

export async function gql(ctx: CommandContext, query: string, variables: Record<string, unknown>): Promise<Record<string, unknown>> {
  const api = await ctx.api();
  const res = await api.call('POST', '/admin/gql', gqlResponseSchema, { body: { query, variables } });
  const first = res.errors?.[0];
  if (first) throw new CliError(first.extensions?.code ?? 'GRAPHQL_ERROR', first.message);
  return res.data ?? {};
}

export const catalogImageSchema = z.object({
  name: z.string().nullable(),
  tag: z.string().nullable(),
  registry: z.string().nullable(),
  digest: z.string().nullable(),
  size_bytes: z.union([z.number(), z.string()]).nullable(),
  aliases: z.array(z.string()).nullable(),
  supported_accelerators: z.array(z.string()).nullable(),
  resource_limits: z.array(z.object({ key: z.string().nullable(), min: z.string().nullable(), max: z.string().nullable() })).nullable(),
  installed: z.boolean().nullable(),
  installed_agents: z.array(z.string()).nullable(),
});
export type CatalogImage = z.infer<typeof catalogImageSchema>;

export const taskResultSchema = z.object({ ok: z.boolean().nullable(), msg: z.string().nullable(), task_id: z.string().nullish() });

export const CATALOG_IMAGE_FIELDS = 'name tag registry digest size_bytes aliases supported_accelerators resource_limits { key min max } installed installed_agents';

export function catalogView(images: readonly CatalogImage[]): ListView<CatalogImage> {
  return {
    rows: images,
    empty: 'The catalog is empty: `stowctl catalog rescan REGISTRY` reads a registry into it.',
    columns: [
      { header: 'IMAGE', cell: (i) => `${i.registry}/${i.name}:${i.tag}${i.aliases?.length ? ` (${i.aliases.join(', ')})` : ''}` },
      { header: 'DIGEST', cell: (i, o) => digestCell(i.digest, o) },
      { header: 'SIZE', cell: (i) => formatBytes(Number(i.size_bytes)) },
      { header: 'ACCELERATORS', cell: (i) => formatList(i.supported_accelerators ?? []) },
      { header: 'LIMITS', cell: (i) => formatList((i.resource_limits ?? []).map((l) => `${l.key}=${l.min}..${l.max ?? ''}`), 4) },
      { header: 'INSTALLED', cell: (i, o) => (i.installed_agents ? (o.noTrunc ? i.installed_agents.join(',') || '-' : formatList(i.installed_agents)) : i.installed ? 'yes' : 'no') },
    ],
  };
}

/** A refused task mutation; a registry that is not configured says how to add one. */
export function refused(what: string, msg: string | null, registry?: string, original?: unknown): CliError {
  const text = msg ?? `${what} was refused`;
  if (registry !== undefined && /REGISTRY_NOT_FOUND|no registry|not configured/i.test(text)) {
    const scheme = /^(localhost|127\.|\[::1\])/.test(registry) ? 'http' : 'https';
    return new CliError(
      'REGISTRY_NOT_FOUND',
      `no registry "${registry}" is configured. Add it with \`stowctl catalog registry add ${registry}${scheme === 'http' ? ' --insecure' : ''}\` ` +
        `(or in the control plane's seed.registries; \`stowd dev --insecure-registry ${registry}\` for a dev cluster), then rescan`,
      { details: { registry } },
    );
  }
  if (original instanceof CliError) return original;
  return new CliError('REFUSED', text);
}

export function renderOutcome(event: string, message: string, targets: ReadonlyArray<{ machine_id: string; status: string; failure?: { code: string; message: string } | undefined }>): string {
  const head = `${event === 'bgtask_done' ? 'done' : event.replace('bgtask_', '')}: ${message}`;
  if (targets.length === 0) return head;
  return `${head}\n${formatTable(
    ['MACHINE', 'STATUS', 'ERROR'],
    targets.map((t) => [t.machine_id, t.status, t.failure ? `${t.failure.code}: ${t.failure.message}` : '']),
  )}`;
}
