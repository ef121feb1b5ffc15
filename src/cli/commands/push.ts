import type { Command } from 'commander';
import { usageError } from '../errors.js';
import { digestArg, machineListArg, platformArg } from '../flags.js';
import type { Bind } from './types.js';

/**
 * `image push`: read the image locally (archive or Docker API) into a temporary store, check
 * --expected-digest, create the push operation, upload once to the first target's /v2/ (only the blobs
 * it lacks), report how the upload ended, then follow the operation as it distributes to the rest.
 */
export function registerPush(image: Command, bind: Bind): void {
  // Declarations only: the upload machinery (store, registry client, progress) loads when a push runs.
  image
    .command('push')
    .description('push a local image (Docker API at DOCKER_HOST, or --archive) to machines')
    .argument('<image>', 'image reference or ID ("alpine:3.19"); with --archive, which image of the archive')
    .requiredOption('--to <id>', 'target machine (repeat, or comma-separate); the first receives the upload', machineListArg('--to'))
    .option('--platform <os/arch[/variant]>', 'the platform to take from a multi-platform image', platformArg)
    .option('--expected-digest <digest>', 'refuse to push unless the image has this digest (or image ID)', digestArg('--expected-digest'))
    .option('--archive <file>', 'read a `docker save` or OCI layout tar instead of the Docker API')
    .option('--tag', "with --archive: push the archive's only image as IMAGE though the archive does not hold that tag")
    .action(
      bind(async (ctx, opts, [name]) => {
        if (opts['tag'] && opts['archive'] === undefined) throw usageError('--tag goes with --archive (the Docker API names the image itself)');
        const [{ checkExpectedDigest, readLocalImage }, { runPush }] = await Promise.all([import('../local-image.js'), import('../push-upload.js')]);
        const to = opts['to'] as string[];
        if (to.length === 0) throw usageError('--to needs at least one machine');
        const expected = opts['expected-digest'] as string | undefined ?? (opts['expectedDigest'] as string | undefined);
        // Settle the configuration first: a bad host or config file is exit 2 before any image is read.
        await ctx.resolvedConfig();
        const img = await readLocalImage({
          image: name!,
          archive: opts['archive'] as string | undefined,
          dockerHost: ctx.io.env['DOCKER_HOST'],
          platform: opts['platform'] as string | undefined,
          retag: opts['tag'] === true,
        });
        try {
          if (expected !== undefined) checkExpectedDigest(img, expected, name!);
          return await runPush(ctx, img, { to, platform: opts['platform'] as string | undefined, expected });
        } finally {
          await img.close();
        }
      }),
    );
}

