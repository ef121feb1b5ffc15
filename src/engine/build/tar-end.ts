/**
 * Go's archive/tar ends an archive cleanly when the input stops at an entry boundary, with or without the
 * end-of-archive blocks (and even before the last entry's padding); the docker CLI relies on it, sending
 * `docker build -f <outside>` and `-f -` contexts without them. tar-stream insists on whole archives, so this
 * pass-through follows the tar framing and, when the input stops where Go would stop cleanly, supplies the
 * missing padding and end blocks. Input that stops inside a header, inside entry data or inside padding is
 * passed on as it is, so the parser still reports it as truncated.
 */

const BLOCK = 512;
/** Largest PAX header read for a `size` record (tar-stream refuses larger ones anyway). */
const MAX_PAX_BYTES = 1024 * 1024;

type State = { kind: 'header' } | { kind: 'data'; size: number; left: number; pax: Buffer[] | undefined } | { kind: 'pad'; left: number; whole: boolean };

/** tar's numeric fields: octal text, or base-256 when the first byte has its high bit set. */
function numericField(buf: Buffer, offset: number, length: number): number {
  const field = buf.subarray(offset, offset + length);
  if (field[0]! & 0x80) {
    let n = field[0]! & 0x7f;
    for (let i = 1; i < field.length; i++) n = n * 256 + field[i]!;
    return n;
  }
  const text = field.toString('latin1').replace(/\0.*$/s, '').trim();
  return text === '' ? 0 : Number.parseInt(text, 8);
}

/** The `size` record of a PAX extended header, when it has one. */
function paxSize(data: Buffer): number | undefined {
  const m = /(?:^|\n)\d+ size=(\d+)\n/.exec(data.toString('utf8'));
  return m ? Number(m[1]) : undefined;
}

export async function* completeTarEnd(source: AsyncIterable<Uint8Array>): AsyncGenerator<Buffer> {
  let state: State = { kind: 'header' };
  let header = Buffer.alloc(0);
  let paxOverride: number | undefined;

  const afterData = (size: number): State => {
    const pad = (BLOCK - (size % BLOCK)) % BLOCK;
    return pad === 0 ? { kind: 'header' } : { kind: 'pad', left: pad, whole: true };
  };

  for await (const chunk of source) {
    const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    yield buf;
    let at = 0;
    while (at < buf.length) {
      if (state.kind === 'header') {
        const take = Math.min(BLOCK - header.length, buf.length - at);
        header = Buffer.concat([header, buf.subarray(at, at + take)]);
        at += take;
        if (header.length < BLOCK) break;
        const h = header;
        header = Buffer.alloc(0);
        if (h.every((b) => b === 0)) continue;
        const type = String.fromCharCode(h[156]!);
        let size = numericField(h, 124, 12);
        const isPax = type === 'x';
        if (type === '5') size = 0;
        else if (paxOverride !== undefined && !isPax && type !== 'g' && type !== 'L' && type !== 'K') {
          size = paxOverride;
          paxOverride = undefined;
        }
        state = size === 0 ? { kind: 'header' } : { kind: 'data', size, left: size, pax: isPax && size <= MAX_PAX_BYTES ? [] : undefined };
        continue;
      }
      if (state.kind === 'data') {
        const take = Math.min(state.left, buf.length - at);
        state.pax?.push(buf.subarray(at, at + take));
        state.left -= take;
        at += take;
        if (state.left === 0) {
          if (state.pax) paxOverride = paxSize(Buffer.concat(state.pax));
          state = afterData(state.size);
        }
        continue;
      }
      const take = Math.min(state.left, buf.length - at);
      state = state.left - take === 0 ? { kind: 'header' } : { kind: 'pad', left: state.left - take, whole: false };
      at += take;
    }
  }

  if (state.kind === 'header' && header.length === 0) yield Buffer.alloc(2 * BLOCK);
  else if (state.kind === 'pad' && state.whole) yield Buffer.alloc(state.left + 2 * BLOCK);
}
