import { availabilityView } from '../render.js';
import { statusResponseCheck } from '../status-check.js';
import type { Action } from './types.js';

/**
 * `image status [image] [--digest d] [--machine m]`: the availability records, all or one image's. Its own
 * module because fast-path.ts runs it too, without commander and without the other commands' code.
 */
export const imageStatus: Action = async (ctx, opts, [name]) => {
  const api = await ctx.api();
  const query = { digest: opts['digest'] as string | undefined, machine: opts['machine'] as string | undefined };
  const res = await api.call('GET', '/api/v1/images/status', statusResponseCheck, { query });
  const records = name === undefined ? res.records : (await import('../resolve.js')).matchRecords(name, res.records);
  ctx.list(name === undefined ? res : { records }, availabilityView(records));
};
