import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { StowageError } from '../../src/errors.js';
import {
  ArchiveLinks,
  detectCompression,
  isGzipMagic,
  decompress,
  readTar,
  resolveLinkTarget,
  safeEntryPath,
} from '../../src/oci/archive/index.js';
import { chunked, readAll } from '../harness/streams.js';
import { tarOf } from '../harness/tar.js';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    return err instanceof StowageError ? err.code : `not a StowageError: ${String(err)}`;
  }
}

describe('safeEntryPath', () => {
  it('normalises harmless names', () => {
    expect(safeEntryPath('./manifest.json')).toBe('manifest.json');
    expect(safeEntryPath('a//b/./c/')).toBe('a/b/c');
    expect(safeEntryPath('a/b/../c')).toBe('a/c');
    expect(safeEntryPath('./')).toBe('');
    expect(safeEntryPath('blobs/sha256/abc')).toBe('blobs/sha256/abc');
  });

  it('rejects absolute names, escapes and NUL bytes with UNSAFE_PATH', () => {
    for (const bad of ['/etc/passwd', '../x', 'a/../../x', './..', 'a/b/../../../c', 'C:\\windows', 'a\0b']) {
      expect(codeOf(() => safeEntryPath(bad)), bad).toBe('UNSAFE_PATH');
    }
  });
});

describe('link targets', () => {
  it('resolves symlinks relative to their directory and hard links relative to the root', () => {
    expect(resolveLinkTarget('b/layer.tar', '../a/layer.tar', 'symlink')).toBe('a/layer.tar');
    expect(resolveLinkTarget('b/layer.tar', 'other.tar', 'symlink')).toBe('b/other.tar');
    expect(resolveLinkTarget('b/layer.tar', 'a/layer.tar', 'hardlink')).toBe('a/layer.tar');
  });

  it('refuses links that leave the archive', () => {
    expect(codeOf(() => resolveLinkTarget('b/layer.tar', '../../etc/passwd', 'symlink'))).toBe('UNSAFE_PATH');
    expect(codeOf(() => resolveLinkTarget('layer.tar', '/etc/passwd', 'symlink'))).toBe('UNSAFE_PATH');
    expect(codeOf(() => resolveLinkTarget('b/layer.tar', '../x', 'hardlink'))).toBe('UNSAFE_PATH');
  });

  it('follows chains and symlinked directories, and stops loops', () => {
    const links = new ArchiveLinks();
    links.add('c/layer.tar', '../b/layer.tar', 'symlink');
    links.add('b/layer.tar', '../a/layer.tar', 'symlink');
    links.add('d', 'a', 'symlink');
    expect(links.resolve('c/layer.tar')).toBe('a/layer.tar');
    expect(links.resolve('d/layer.tar')).toBe('a/layer.tar');
    expect(links.resolve('a/layer.tar')).toBe('a/layer.tar');

    const loop = new ArchiveLinks();
    loop.add('x', 'y', 'symlink');
    loop.add('y', 'x', 'symlink');
    expect(codeOf(() => loop.resolve('x'))).toBe('INVALID_ARCHIVE');
  });
});

describe('gzip helpers', () => {
  it('detects compression by magic bytes', () => {
    expect(isGzipMagic(gzipSync(Buffer.from('hello')))).toBe(true);
    expect(isGzipMagic(Buffer.from('hello'))).toBe(false);
    expect(detectCompression(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0]))).toBe('zstd');
    expect(detectCompression(Buffer.alloc(0))).toBe('none');
  });

  it('gunzips a gzip stream and passes anything else through, byte for byte', async () => {
    const data = Buffer.from('x'.repeat(100_000) + 'tail');
    const gz = await decompress(chunked(gzipSync(data), 3));
    expect(gz.compression).toBe('gzip');
    expect((await readAll(gz.stream)).equals(data)).toBe(true);
    const plain = await decompress(chunked(data, 1));
    expect(plain.compression).toBe('none');
    expect((await readAll(plain.stream)).equals(data)).toBe(true);
    const empty = await decompress(chunked(Buffer.alloc(0)));
    expect((await readAll(empty.stream)).length).toBe(0);
  });

  it('reads what the real zstd tool writes, in small chunks, byte for byte', async () => {
    const data = Buffer.concat([randomBytes(300_000), Buffer.from('z'.repeat(200_000))]);
    const zst = execFileSync('zstd', ['-q', '-c', '-3'], { input: data });
    const out = await decompress(chunked(zst, 4096));
    expect(out.compression).toBe('zstd');
    expect((await readAll(out.stream)).equals(data)).toBe(true);
  });

  it('reports corrupt gzip and zstd as INVALID_ARCHIVE', async () => {
    const gz = gzipSync(Buffer.from('y'.repeat(50_000)));
    const { stream } = await decompress(chunked(gz.subarray(0, gz.length - 20)));
    await expect(readAll(stream)).rejects.toMatchObject({ code: 'INVALID_ARCHIVE' });
    // A frame cut short, and one whose content checksum (the zstd tool writes one) does not match.
    const zst = execFileSync('zstd', ['-q', '-c'], { input: Buffer.from('abc'.repeat(100_000)) });
    const broken = await decompress(chunked(zst.subarray(0, zst.length - 8)));
    await expect(readAll(broken.stream)).rejects.toMatchObject({ code: 'INVALID_ARCHIVE', message: /truncated/ });
    const badSum = Buffer.from(zst);
    badSum[badSum.length - 1]! ^= 0xff;
    const mismatched = await decompress(chunked(badSum));
    await expect(readAll(mismatched.stream)).rejects.toMatchObject({ code: 'INVALID_ARCHIVE', message: /checksum/i });
  });

  it('refuses bzip2 and xz by name', async () => {
    await expect(decompress(chunked(Buffer.from('BZh91AY&SY')))).rejects.toMatchObject({ code: 'UNSUPPORTED', message: /bzip2/ });
    await expect(decompress(chunked(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 1, 2])))).rejects.toMatchObject({ code: 'UNSUPPORTED', message: /xz/ });
  });
});

describe('readTar', () => {
  const limits = { maxEntries: 100, maxEntryBytes: 1 << 20 };

  it('yields normalised entries in order', async () => {
    const t = await tarOf([
      { name: './a/', type: 'directory' },
      { name: './a/file', data: 'hello' },
      { name: 'a/link', type: 'symlink', linkname: 'file' },
    ]);
    const seen: string[] = [];
    await readTar(chunked(t), limits, async (e) => {
      const body = e.type === 'file' ? (await readAll(e.body)).toString() : '';
      seen.push(`${e.type}:${e.path}:${e.linkname}:${body}`);
    });
    expect(seen).toEqual(['directory:a::', 'file:a/file::hello', 'symlink:a/link:file:']);
  });

  it('refuses garbage, truncation, unsafe names, devices and limits', async () => {
    const t = await tarOf([{ name: 'a', data: 'z'.repeat(5000) }]);
    const noop = async (): Promise<void> => undefined;
    const drain = async (e: { body: AsyncIterable<Uint8Array> }): Promise<void> => {
      await readAll(e.body);
    };
    await expect(readTar(chunked(Buffer.alloc(2048, 7)), limits, noop)).rejects.toMatchObject({ code: 'INVALID_ARCHIVE' });
    await expect(readTar(chunked(t.subarray(0, 1500)), limits, drain)).rejects.toMatchObject({ code: 'INVALID_ARCHIVE' });
    await expect(readTar(chunked(await tarOf([{ name: '../x', data: 'x' }])), limits, noop)).rejects.toMatchObject({ code: 'UNSAFE_PATH' });
    await expect(readTar(chunked(await tarOf([{ name: 'dev', type: 'fifo' }])), limits, noop)).rejects.toMatchObject({ code: 'INVALID_ARCHIVE' });
    await expect(readTar(chunked(t), { maxEntries: 100, maxEntryBytes: 100 }, noop)).rejects.toMatchObject({ code: 'TOO_LARGE' });
    const many = await tarOf(Array.from({ length: 5 }, (_, i) => ({ name: `f${i}`, data: 'x' })));
    await expect(readTar(chunked(many), { maxEntries: 4, maxEntryBytes: 100 }, noop)).rejects.toMatchObject({ code: 'TOO_LARGE' });
  });
});
