import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command and collects its output (never throws on a non-zero exit). */
export function run(cmd: string, args: string[], opts: { env?: Record<string, string>; cwd?: string; input?: string } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(opts.input ?? '');
  });
}

/** The real docker CLI against an engine on tcp://host:port, with a private config directory. */
export function docker(engine: string, configDir: string, args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  return run('docker', args, { env: { DOCKER_HOST: engine, DOCKER_CONFIG: configDir, DOCKER_CLI_HINTS: 'false', ...env } });
}

async function tarBytes(files: Record<string, string>): Promise<Buffer> {
  const pack = tar.pack();
  const dirs = new Set<string>();
  for (const name of Object.keys(files).sort()) {
    const parts = name.split('/');
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (!dirs.has(d)) {
        dirs.add(d);
        pack.entry({ name: `${d}/`, type: 'directory', mode: 0o755, mtime: new Date(0) });
      }
    }
    pack.entry({ name, mode: 0o644, mtime: new Date(0) }, files[name]!);
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

const sha = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex');

/**
 * Writes an OCI image layout with one gzip layer per entry of `layers`, tagged `tag`, that skopeo can
 * copy into a registry (oci:<dir>:<tag>).
 */
export async function makeOciLayout(
  dir: string,
  tag: string,
  layers: Array<Record<string, string>>,
  config: Record<string, unknown> = {},
): Promise<{ manifestDigest: string }> {
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const layerDescs = [];
  const diffIds = [];
  for (const files of layers) {
    const raw = await tarBytes(files);
    const gz = gzipSync(raw);
    await writeFile(join(blobs, sha(gz)), gz);
    layerDescs.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${sha(gz)}`, size: gz.length });
    diffIds.push(`sha256:${sha(raw)}`);
  }
  const cfg = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      created: '2024-01-01T00:00:00Z',
      config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/sh'], ...config },
      rootfs: { type: 'layers', diff_ids: diffIds },
      history: layers.map((_, i) => ({ created: '2024-01-01T00:00:00Z', created_by: `layer ${i}` })),
    }),
  );
  await writeFile(join(blobs, sha(cfg)), cfg);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${sha(cfg)}`, size: cfg.length },
      layers: layerDescs,
    }),
  );
  await writeFile(join(blobs, sha(manifest)), manifest);
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: `sha256:${sha(manifest)}`,
          size: manifest.length,
          annotations: { 'org.opencontainers.image.ref.name': tag },
        },
      ],
    }),
  );
  return { manifestDigest: `sha256:${sha(manifest)}` };
}

/** skopeo copy into a plain-HTTP registry. */
export async function skopeoCopy(src: string, dest: string): Promise<void> {
  const r = await run('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', src, dest]);
  if (r.code !== 0) throw new Error(`skopeo copy failed: ${r.stderr}`);
}

export async function skopeoInspect(ref: string): Promise<{ Digest: string }> {
  const r = await run('skopeo', ['inspect', '--tls-verify=false', ref]);
  if (r.code !== 0) throw new Error(`skopeo inspect failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as { Digest: string };
}

/** Lists the entries of a layer tar (plain or gzip). */
export async function tarEntries(data: AsyncIterable<Uint8Array>): Promise<Map<string, { type: string; content: string; uid: number; gid: number; mode: number }>> {
  const chunks: Buffer[] = [];
  for await (const c of data) chunks.push(Buffer.from(c));
  let buf = Buffer.concat(chunks);
  if (buf[0] === 0x1f && buf[1] === 0x8b) buf = (await import('node:zlib')).gunzipSync(buf);
  const ex = tar.extract();
  const out = new Map<string, { type: string; content: string; uid: number; gid: number; mode: number }>();
  const done = (async () => {
    for await (const e of ex) {
      const parts: Buffer[] = [];
      for await (const c of e) parts.push(c as Buffer);
      out.set(e.header.name, { type: e.header.type, content: Buffer.concat(parts).toString(), uid: e.header.uid, gid: e.header.gid, mode: e.header.mode });
    }
  })();
  ex.end(buf);
  await done;
  return out;
}

/** An OCI layout whose `tag` is a multi-platform index with one small image per platform ("linux/arm64"). */
export async function makeOciIndexLayout(dir: string, tag: string, platforms: string[]): Promise<{ indexDigest: string; children: Record<string, string> }> {
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const put = async (b: Buffer) => {
    await writeFile(join(blobs, sha(b)), b);
    return { digest: `sha256:${sha(b)}`, size: b.length };
  };
  const children: Record<string, string> = {};
  const manifests = [];
  for (const p of platforms) {
    const [os, architecture, variant] = p.split('/') as [string, string, string | undefined];
    const raw = await tarBytes({ 'platform.txt': p });
    const layer = await put(gzipSync(raw));
    const config = await put(
      Buffer.from(JSON.stringify({ architecture, os, ...(variant ? { variant } : {}), config: { Cmd: ['/bin/sh'] }, rootfs: { type: 'layers', diff_ids: [`sha256:${sha(raw)}`] } })),
    );
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...layer }],
      }),
    );
    const m = await put(manifest);
    children[p] = m.digest;
    manifests.push({ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...m, platform: { os, architecture, ...(variant ? { variant } : {}) } });
  }
  const index = await put(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests })));
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: 'application/vnd.oci.image.index.v1+json', ...index, annotations: { 'org.opencontainers.image.ref.name': tag } }],
    }),
  );
  return { indexDigest: index.digest, children };
}
