import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { createGzip } from 'node:zlib';
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

/** The same for gzip: a tar whose first entry claims `expandBytes`, gzip at level 9 (about 1 KiB per MiB). */
export async function writeGzipBomb(file: string, expandBytes: number): Promise<number> {
  const out = createWriteStream(file);
  const gz = createGzip({ level: 9 });
  gz.pipe(out);
  let written = 0;
  gz.on('data', (c: Buffer) => (written += c.length));
  const write = async (chunk: Buffer): Promise<void> => {
    if (!gz.write(chunk)) await once(gz, 'drain');
  };
  await write(tarHeader('layer.tar', expandBytes));
  const zeros = Buffer.alloc(4 * 1024 * 1024);
  for (let left = expandBytes; left > 0; left -= zeros.length) await write(left >= zeros.length ? zeros : zeros.subarray(0, left));
  gz.end();
  await once(out, 'close');
  return written;
}

/** A gzip tar of `count` directories (e/0/, e/1/, …): an archive that is all entries and no content. */
export async function writeManyEntriesTar(file: string, count: number): Promise<number> {
  const out = createWriteStream(file);
  const gz = createGzip({ level: 6 });
  gz.pipe(out);
  let written = 0;
  gz.on('data', (c: Buffer) => (written += c.length));
  for (let i = 0; i < count; i++) {
    if (!gz.write(tarHeader(`e/${i}/`, 0, '5'))) await once(gz, 'drain');
  }
  gz.end(Buffer.alloc(1024));
  await once(out, 'close');
  return written;
}

/** A ustar header, of a regular file unless `type` says otherwise (sizes beyond 8 GiB are not needed here). */
function tarHeader(name: string, size: number, type = '0'): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 'utf8');
  h.write('0000644\0', 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  h.write(size.toString(8).padStart(11, '0') + '\0', 124);
  h.write('00000000000\0', 136);
  h.write('        ', 148);
  h.write(type, 156);
  h.write('ustar\0', 257);
  h.write('00', 263);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  return h;
}
