import type { Command } from 'commander';
import { machineArg } from '../flags.js';
import type { Bind } from './types.js';

/** `image ls`: what the machines hold, one row per platform image with the machines that have it (docker's `images`). */
export function registerImageList(image: Command, bind: Bind): void {
  image
    .command('ls')
    .alias('list')
    .description('images the machines hold, with the machines that hold each (the registry catalog is `stowctl catalog ls`)')
    .argument('[image]', 'only this image: reference, digest, unique digest prefix or image ID')
    .option('--machine <id>', 'only images on this machine', machineArg('--machine'))
    .action(
      bind(async (ctx, opts, [name]) => {
        const [{ statusResponseSchema }, { heldImages, heldImagesView }, { matchRecords }] = await Promise.all([
          import('../responses.js'),
          import('../render.js'),
          import('../resolve.js'),
        ]);
        const api = await ctx.api();
        const res = await api.call('GET', '/api/v1/images/status', statusResponseSchema, { query: { machine: opts['machine'] as string | undefined } });
        const images = heldImages(name === undefined ? res.records : matchRecords(name, res.records));
        ctx.list({ images }, heldImagesView(images));
      }),
    );
}
