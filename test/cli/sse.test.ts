import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { CliError } from '../../src/cli/errors.js';
import { readSse, type SseEvent } from '../../src/cli/sse.js';

async function events(chunks: string[], max?: number): Promise<SseEvent[]> {
  const out: SseEvent[] = [];
  for await (const e of readSse(Readable.from(chunks.map((c) => Buffer.from(c))), max)) out.push(e);
  return out;
}

describe('stowctl SSE reader', () => {
  const stream = 'event: bgtask_updated\ndata: {"a":1}\n\n: keep-alive\n\nid: 7\nevent: bgtask_done\ndata: line1\ndata: line2\n\n';

  it('parses events, ids, multi-line data and comments', async () => {
    expect(await events([stream])).toEqual([
      { event: 'bgtask_updated', data: '{"a":1}', id: undefined },
      { event: 'bgtask_done', data: 'line1\nline2', id: '7' },
    ]);
  });

  it('gives the same events however the bytes are split, CRLF and CR line ends included', async () => {
    const whole = await events([stream]);
    const bytes = [...stream];
    expect(await events(bytes)).toEqual(whole);
    expect(await events([stream.replace(/\n/g, '\r\n')])).toEqual(whole);
    expect(await events(stream.replace(/\n/g, '\r').split(''))).toEqual(whole);
    // A multi-byte character split across chunks stays whole.
    const euro = Buffer.from('data: €\n\n');
    const out: SseEvent[] = [];
    for await (const e of readSse(Readable.from([euro.subarray(0, 7), euro.subarray(7)]))) out.push(e);
    expect(out[0]?.data).toBe('€');
  });

  it('drops an event cut off by the end of the stream, and refuses oversized events', async () => {
    expect(await events(['data: whole\n\ndata: cut'])).toEqual([{ event: 'message', data: 'whole', id: undefined }]);
    await expect(events([`data: ${'x'.repeat(100)}\n\n`], 50)).rejects.toBeInstanceOf(CliError);
  });
});
