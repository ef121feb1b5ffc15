import type { Command } from 'commander';
import { usageError } from '../errors.js';
import { digestArg, machineArg } from '../flags.js';
import { imageStatus } from './image-status.js';
import type { Bind } from './types.js';

/**
 * `image status` and `image inspect`: read-only questions about where an image is. What inspect runs is
 * imported when it runs; status (image-status.ts), the command run most, is small and zod-free, and
 * fast-path.ts usually runs it before commander is even loaded.
 */
export function registerStatus(image: Command, bind: Bind): void {
  image
    .command('status')
    .description('availability records: which image is on which machine, per platform')
    .argument('[image]', 'only this image: reference, digest, unique digest prefix or image ID')
    .option('--digest <digest>', 'only this manifest or index digest', digestArg('--digest'))
    .option('--machine <id>', 'only this machine', machineArg('--machine'))
    .action(bind(imageStatus));

  image
    .command('inspect')
    .description('an image: its platforms, layers and where it is')
    .argument('[image]', 'reference, digest, unique digest prefix or image ID')
    .option('--digest <digest>', 'manifest or index digest', digestArg('--digest'))
    .option('--reference <ref>', 'a reference a machine holds ("alpine:3.19" is docker.io/library/alpine:3.19)')
    .option('--machine <id>', 'read it from this machine', machineArg('--machine'))
    .action(
      bind(async (ctx, opts, [name]) => {
        let digest = opts['digest'] as string | undefined;
        let reference = opts['reference'] as string | undefined;
        const machine = opts['machine'] as string | undefined;
        const given = [name, digest, reference].filter((x) => x !== undefined).length;
        if (given === 0) throw usageError('image inspect needs an image, --digest or --reference');
        if (given > 1) throw usageError('image inspect takes one of an image, --digest or --reference');
        const [{ imageInspectSchema }, { renderInspect }, { resolveImage }, { normalizeReference }] = await Promise.all([
          import('../responses.js'),
          import('../render.js'),
          import('../resolve.js'),
          import('../../oci/reference.js'),
        ]);
        const api = await ctx.api();
        if (name !== undefined) digest = (await resolveImage(api, name, machine)).digest;
        if (reference !== undefined) reference = normalizeReferenceArg(reference, normalizeReference);
        const res = await api.call('GET', '/api/v1/images/inspect', imageInspectSchema, { query: { digest, reference, machine } });
        ctx.print(res, () => renderInspect(res, Date.now(), ctx.view.noTrunc));
      }),
    );
}

/** "myapp:1.0" → "docker.io/library/myapp:1.0", as the machines record references. */
function normalizeReferenceArg(reference: string, normalize: (s: string) => string): string {
  try {
    return normalize(reference);
  } catch (err) {
    throw usageError(`--reference "${reference}": ${(err as Error).message}`, 'INVALID_REFERENCE');
  }
}
