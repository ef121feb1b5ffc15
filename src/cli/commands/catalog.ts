import type { Command } from 'commander';
import { z } from 'zod';
import type { CommandContext } from '../context.js';
import { CliError } from '../errors.js';
import { formatBytes, formatList, formatTable, shortDigest } from '../output.js';
import { watchTask } from './task.js';
import type { Bind } from './types.js';

/**
 * stowctl image list / rescan / preload / unload / alias / dealias / forget, over the admin GraphQL API
 * (POST /admin/gql). Task-starting commands follow the task to its end (like `task watch`) unless
 * --detach; their exit code is 1 when the task did not succeed. GraphQL errors keep their code
 * (FORBIDDEN, …); {ok: false} answers exit 1 with the server's message.
 */

const gqlErrorSchema = z.object({ message: z.string(), extensions: z.object({ code: z.string().optional() }).passthrough().optional() });
const gqlResponseSchema = z.object({ data: z.record(z.unknown()).nullish(), errors: z.array(gqlErrorSchema).optional() });

async function gql(ctx: CommandContext, query: string, variables: Record<string, unknown>): Promise<Record<string, unknown>> {
  const api = await ctx.api();
  const res = await api.call('POST', '/admin/gql', gqlResponseSchema, { body: { query, variables } });
  const first = res.errors?.[0];
  if (first) throw new CliError(first.extensions?.code ?? 'GRAPHQL_ERROR', first.message);
  return res.data ?? {};
}

const imageSchema = z.object({
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
const resultSchema = z.object({ ok: z.boolean().nullable(), msg: z.string().nullable(), task_id: z.string().nullish() });

const IMAGE_FIELDS = 'name tag registry digest size_bytes aliases supported_accelerators resource_limits { key min max } installed installed_agents';

export function registerCatalogCommands(image: Command, bind: Bind): void {
  image
    .command('list')
    .alias('ls')
    .description('images in the catalog (what rescans found), with where they are installed')
    .option('--installed', 'only images installed on some agent')
    .option('--not-installed', 'only images installed nowhere')
    .option('--operation', 'only operation (ai.backend.role=SYSTEM) images')
    .option('--domain <name>', 'images the domain may use')
    .option('--group <name>', 'images installed on an agent of a scaling group the group may use')
    .option('--scaling-group <name>', 'images installed on an agent of the scaling group')
    .action(
      bind(async (ctx, opts) => {
        const vars = {
          is_installed: opts['installed'] ? true : opts['notInstalled'] ? false : null,
          is_operation: opts['operation'] ? true : null,
          domain: (opts['domain'] as string | undefined) ?? null,
          group: (opts['group'] as string | undefined) ?? null,
          scaling_group: (opts['scalingGroup'] as string | undefined) ?? null,
        };
        const data = await gql(
          ctx,
          `query($is_installed: Boolean, $is_operation: Boolean, $domain: String, $group: String, $scaling_group: String) {
            images(is_installed: $is_installed, is_operation: $is_operation, domain: $domain, group: $group, scaling_group: $scaling_group) { ${IMAGE_FIELDS} } }`,
          vars,
        );
        const images = z.array(imageSchema).parse(data['images'] ?? []);
        ctx.print({ images }, () =>
          formatTable(
            ['IMAGE', 'DIGEST', 'SIZE', 'ACCELERATORS', 'LIMITS', 'INSTALLED'],
            images.map((i) => [
              `${i.registry}/${i.name}:${i.tag}${i.aliases?.length ? ` (${i.aliases.join(', ')})` : ''}`,
              shortDigest(i.digest),
              formatBytes(Number(i.size_bytes)),
              formatList(i.supported_accelerators ?? []),
              formatList((i.resource_limits ?? []).map((l) => `${l.key}=${l.min}..${l.max ?? ''}`), 4),
              i.installed_agents ? formatList(i.installed_agents) : i.installed ? 'yes' : 'no',
            ]),
          ),
        );
      }),
    );

  const taskCommand = (name: string, description: string, args: string[], mutation: string, vars: (a: string[], o: Record<string, unknown>) => Record<string, unknown>, agents: boolean) => {
    const cmd = image.command(name).description(description);
    for (const a of args) cmd.argument(`<${a}>`);
    if (agents) cmd.requiredOption('--agents <selector>', 'target agents: *, machine IDs (comma-separated), label:key=value, scaling_group:name');
    cmd.option('--detach', 'print the task ID and return without following the task');
    cmd.action(
      bind(async (ctx, opts, positional) => {
        const data = await gql(ctx, mutation, vars(positional, opts));
        const result = resultSchema.parse(Object.values(data)[0]);
        if (!result.ok || !result.task_id) throw new CliError('REFUSED', result.msg ?? `${name} was refused`);
        if (opts['detach']) {
          ctx.print(result, () => result.task_id ?? '');
          return 0;
        }
        if (!ctx.json) ctx.diag(`${result.msg ?? ''} (task ${result.task_id})`);
        const outcome = await watchTask(ctx, result.task_id);
        ctx.print({ ...result, outcome }, () => renderOutcome(outcome.event, outcome.data.message, outcome.data.operation.targets));
        // A partial success ends bgtask_done (as Backend.AI sends it) but is not all targets ok.
        return outcome.event === 'bgtask_done' && outcome.data.operation.status === 'succeeded' ? 0 : 1;
      }),
    );
  };

  taskCommand('rescan', 'rescan a registry into the catalog', ['registry'], 'mutation($r: String!) { rescan_images(registry: $r) { ok msg task_id } }', (a) => ({ r: a[0] }), false);
  taskCommand(
    'preload',
    'pull an image from the catalog onto agents (from a peer that has it, else the registry)',
    ['reference'],
    'mutation($r: String!, $t: [String]!) { preload_image(reference: $r, target_agents: $t) { ok msg task_id } }',
    (a, o) => ({ r: a[0], t: o['agents'] }),
    true,
  );
  taskCommand(
    'unload',
    'remove an image from agents',
    ['reference'],
    'mutation($r: String!, $t: [String]!) { unload_image(reference: $r, target_agents: $t) { ok msg task_id } }',
    (a, o) => ({ r: a[0], t: o['agents'] }),
    true,
  );

  const simple = (name: string, description: string, args: string[], mutation: string, vars: (a: string[]) => Record<string, unknown>) => {
    const cmd = image.command(name).description(description);
    for (const a of args) cmd.argument(`<${a}>`);
    cmd.action(
      bind(async (ctx, _opts, positional) => {
        const data = await gql(ctx, mutation, vars(positional));
        const result = resultSchema.parse(Object.values(data)[0]);
        if (!result.ok) throw new CliError('REFUSED', result.msg ?? `${name} was refused`);
        ctx.print(result, () => result.msg ?? 'ok');
      }),
    );
  };
  simple('alias', 'name a catalog image by an alias', ['alias', 'target'], 'mutation($a: String!, $t: String!) { alias_image(alias: $a, target: $t) { ok msg } }', (a) => ({
    a: a[0],
    t: a[1],
  }));
  simple('dealias', 'remove an alias', ['alias'], 'mutation($a: String!) { dealias_image(alias: $a) { ok msg } }', (a) => ({ a: a[0] }));
  simple('forget', 'remove an image from the catalog (not from agents)', ['reference'], 'mutation($r: String!) { forget_image(reference: $r) { ok msg } }', (a) => ({
    r: a[0],
  }));
}

function renderOutcome(event: string, message: string, targets: ReadonlyArray<{ machine_id: string; status: string; failure?: { code: string; message: string } | undefined }>): string {
  const head = `${event === 'bgtask_done' ? 'done' : event.replace('bgtask_', '')}: ${message}`;
  if (targets.length === 0) return head;
  return `${head}\n${formatTable(
    ['MACHINE', 'STATUS', 'ERROR'],
    targets.map((t) => [t.machine_id, t.status, t.failure ? `${t.failure.code}: ${t.failure.message}` : '']),
  )}`;
}
