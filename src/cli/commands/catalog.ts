import type { Command } from 'commander';
import { usageError } from '../errors.js';
import type { Bind } from './types.js';

/**
 * `stowctl catalog ls | rescan | preload | unload | alias | dealias | forget | registry …`: the registry
 * catalog, over the admin GraphQL API (catalog-gql.ts) and the admin REST for registries. Task-starting
 * commands follow the task to its end (like `task watch`) unless --detach; their exit code is 1 when the
 * task did not succeed. The old spellings under `image` (`image rescan`, …) still work and say so.
 */

type Register = (parent: Command, bind: Bind, deprecatedAs?: string) => void;

export function registerCatalogCommands(program: Command, image: Command, bind: Bind): void {
  const catalog = program.command('catalog').description('the registry catalog: what the registries hold, rescans, preload and unload');
  catalog
    .command('ls')
    .alias('list')
    .description('images in the catalog (what rescans found), with where they are installed')
    .option('--installed', 'only images installed on some agent')
    .option('--not-installed', 'only images installed nowhere')
    .option('--operation', 'only operation (ai.backend.role=SYSTEM) images')
    .option('--domain <name>', 'images the domain may use')
    .option('--group <name>', 'images installed on an agent of a scaling group the group may use')
    .option('--scaling-group <name>', 'images installed on an agent of the scaling group')
    .action(
      bind(async (ctx, opts) => {
        const { gql, catalogImageSchema, catalogView, CATALOG_IMAGE_FIELDS } = await import('../catalog-gql.js');
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
            images(is_installed: $is_installed, is_operation: $is_operation, domain: $domain, group: $group, scaling_group: $scaling_group) { ${CATALOG_IMAGE_FIELDS} } }`,
          vars,
        );
        const images = catalogImageSchema.array().parse(data['images'] ?? []);
        ctx.list({ images }, catalogView(images));
      }),
    );
  for (const register of [rescan, preload, unload, alias, dealias, forget]) {
    register(catalog, bind);
    register(image, bind, 'catalog');
  }
  registerRegistryCommands(catalog, bind);
}

/** A catalog command, or its old spelling under `image` that works the same and points to the new one. */
function declare(parent: Command, name: string, description: string, bind: Bind, deprecatedAs?: string): Command {
  const cmd = parent.command(name).description(deprecatedAs ? `(deprecated: use \`stowctl ${deprecatedAs} ${name}\`) ${description}` : description);
  if (deprecatedAs) {
    cmd.hook('preAction', (_this, action) => {
      const stderr = (action.configureOutput() as { writeErr?: (s: string) => void }).writeErr;
      stderr?.(`stowctl: \`image ${name}\` is deprecated; use \`stowctl ${deprecatedAs} ${name}\`\n`);
    });
  }
  void bind;
  return cmd;
}

function taskCommand(
  parent: Command,
  bind: Bind,
  deprecatedAs: string | undefined,
  spec: { name: string; description: string; args: string[]; mutation: string; vars: (a: string[], o: Record<string, unknown>) => Record<string, unknown>; agents: boolean },
): void {
  const cmd = declare(parent, spec.name, spec.description, bind, deprecatedAs);
  for (const a of spec.args) cmd.argument(`<${a}>`);
  if (spec.agents) cmd.requiredOption('--agents <selector>', 'target agents: *, machine IDs (comma-separated), label:key=value, scaling_group:name');
  cmd.option('--detach', 'print the task ID and return without following the task');
  cmd.action(
    bind(async (ctx, opts, positional) => {
      const [{ gql, taskResultSchema, refused, renderOutcome }, { watchTask }] = await Promise.all([import('../catalog-gql.js'), import('../task-watch.js')]);
      const registry = spec.name === 'rescan' ? positional[0] : undefined;
      let data: Record<string, unknown>;
      try {
        data = await gql(ctx, spec.mutation, spec.vars(positional, opts));
      } catch (err) {
        // A registry that is not configured may come back as a GraphQL error: the hint is the same.
        throw registry !== undefined && err instanceof Error ? refused(spec.name, `${(err as { code?: string }).code ?? ''} ${err.message}`, registry, err) : err;
      }
      const result = taskResultSchema.parse(Object.values(data)[0]);
      if (!result.ok || !result.task_id) throw refused(spec.name, result.msg, registry);
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
}

const rescan: Register = (parent, bind, deprecatedAs) =>
  taskCommand(parent, bind, deprecatedAs, {
    name: 'rescan',
    description: 'rescan a registry into the catalog',
    args: ['registry'],
    mutation: 'mutation($r: String!) { rescan_images(registry: $r) { ok msg task_id } }',
    vars: (a) => ({ r: a[0] }),
    agents: false,
  });

const preload: Register = (parent, bind, deprecatedAs) =>
  taskCommand(parent, bind, deprecatedAs, {
    name: 'preload',
    description: 'pull an image from the catalog onto agents (from a peer that has it, else the registry)',
    args: ['reference'],
    mutation: 'mutation($r: String!, $t: [String]!) { preload_image(reference: $r, target_agents: $t) { ok msg task_id } }',
    vars: (a, o) => ({ r: a[0], t: o['agents'] }),
    agents: true,
  });

const unload: Register = (parent, bind, deprecatedAs) =>
  taskCommand(parent, bind, deprecatedAs, {
    name: 'unload',
    description: 'remove an image from agents',
    args: ['reference'],
    mutation: 'mutation($r: String!, $t: [String]!) { unload_image(reference: $r, target_agents: $t) { ok msg task_id } }',
    vars: (a, o) => ({ r: a[0], t: o['agents'] }),
    agents: true,
  });

function simple(parent: Command, bind: Bind, deprecatedAs: string | undefined, name: string, description: string, args: string[], mutation: string): void {
  const cmd = declare(parent, name, description, bind, deprecatedAs);
  for (const a of args) cmd.argument(`<${a}>`);
  cmd.action(
    bind(async (ctx, _opts, positional) => {
      const { gql, taskResultSchema, refused } = await import('../catalog-gql.js');
      const vars = Object.fromEntries(args.map((a, i) => [a, positional[i]]));
      const data = await gql(ctx, mutation, vars);
      const result = taskResultSchema.parse(Object.values(data)[0]);
      if (!result.ok) throw refused(name, result.msg);
      ctx.print(result, () => result.msg ?? 'ok');
    }),
  );
}

const alias: Register = (parent, bind, deprecatedAs) =>
  simple(parent, bind, deprecatedAs, 'alias', 'name a catalog image by an alias', ['alias', 'target'], 'mutation($alias: String!, $target: String!) { alias_image(alias: $alias, target: $target) { ok msg } }');
const dealias: Register = (parent, bind, deprecatedAs) =>
  simple(parent, bind, deprecatedAs, 'dealias', 'remove an alias', ['alias'], 'mutation($alias: String!) { dealias_image(alias: $alias) { ok msg } }');
const forget: Register = (parent, bind, deprecatedAs) =>
  simple(parent, bind, deprecatedAs, 'forget', 'remove an image from the catalog (not from agents)', ['reference'], 'mutation($reference: String!) { forget_image(reference: $reference) { ok msg } }');

/** `catalog registry ls|add|rm` over the superadmin REST (/api/v1/admin/registries). */
function registerRegistryCommands(catalog: Command, bind: Bind): void {
  const registry = catalog.command('registry').description('the registries rescans read (superadmin)');
  registry
    .command('ls')
    .alias('list')
    .description('configured registries (passwords are never shown)')
    .action(
      bind(async (ctx) => {
        const { registriesResponseSchema } = await import('../responses.js');
        const api = await ctx.api();
        const res = await api.call('GET', '/api/v1/admin/registries', registriesResponseSchema);
        ctx.list(res, {
          rows: res.registries,
          empty: 'No registries are configured: `stowctl catalog registry add HOST[:PORT]`.',
          columns: [
            { header: 'NAME', cell: (r) => r.name },
            { header: 'URL', cell: (r) => r.url },
            { header: 'INSECURE', cell: (r) => (r.insecure ? 'yes' : 'no') },
            { header: 'PROJECT', cell: (r) => r.project ?? '-' },
          ],
        });
      }),
    );
  registry
    .command('add')
    .description('configure a registry (or change one) by its host[:port] as references spell it')
    .argument('<name>', 'host[:port], e.g. registry.internal:5000')
    .option('--url <url>', 'scheme and host (default https://NAME, http:// with --insecure)')
    .option('--insecure', 'plain HTTP')
    .option('--project <name>', 'scan only <project>/… repositories')
    .action(
      bind(async (ctx, opts, [name]) => {
        if (!/^[A-Za-z0-9.-]+(:[0-9]+)?$/.test(name!)) throw usageError(`"${name}" is not a registry host[:port]`);
        const body: Record<string, unknown> = {};
        if (opts['url'] !== undefined) body['url'] = opts['url'];
        if (opts['insecure']) body['insecure'] = true;
        if (opts['project'] !== undefined) body['project'] = opts['project'];
        const { anyObjectSchema } = await import('../responses.js');
        const api = await ctx.api();
        const res = await api.call('PUT', `/api/v1/admin/registries/${encodeURIComponent(name!)}`, anyObjectSchema, { body });
        ctx.print(res, () => `registry ${name} configured; \`stowctl catalog rescan ${name}\` reads it`);
      }),
    );
  registry
    .command('rm')
    .description('remove a registry and its catalog rows')
    .argument('<name>', 'host[:port]')
    .action(
      bind(async (ctx, _opts, [name]) => {
        const { anyObjectSchema } = await import('../responses.js');
        const api = await ctx.api();
        const res = await api.call('DELETE', `/api/v1/admin/registries/${encodeURIComponent(name!)}`, anyObjectSchema);
        ctx.print(res, () => `registry ${name} removed`);
      }),
    );
}
