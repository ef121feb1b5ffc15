import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { CompressStream } from 'zstd-napi';

/**
 * Hostile compressed input for tests: a zstd stream a few tens of KiB long that expands to `expandBytes`
 * of a tar whose first entry claims to be that big (so a reader keeps reading it as file content).
 *
 *   await writeZstdBomb(file, 1024 ** 3);   // ~33 KiB on disk, 1 GiB decompressed
 */
export async function writeZstdBomb(file: string, expandBytes: number): Promise<number> {
  const out = createWriteStream(file);
  const zst = new CompressStream({ compressionLevel: 3 });
  zst.pipe(out);
  let written = 0;
  zst.on('data', (c: Buffer) => (written += c.length));
  const write = async (chunk: Buffer): Promise<void> => {
    if (!zst.write(chunk)) await once(zst, 'drain');
  };
  await write(tarHeader('layer.tar', expandBytes));
  const zeros = Buffer.alloc(4 * 1024 * 1024);
  for (let left = expandBytes; left > 0; left -= zeros.length) await write(left >= zeros.length ? zeros : zeros.subarray(0, left));
  zst.end();
  await once(out, 'close');
  return written;
}

/** A ustar header for a regular file (sizes beyond 8 GiB are not needed here). */
function tarHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 'utf8');
  h.write('0000644\0', 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  h.write(size.toString(8).padStart(11, '0') + '\0', 124);
  h.write('00000000000\0', 136);
  h.write('        ', 148);
  h.write('0', 156);
  h.write('ustar\0', 257);
  h.write('00', 263);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  return h;
}
