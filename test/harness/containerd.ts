import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { access, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { run, runOk, type RunResult } from './run.js';
import { tmpDir } from './tmp.js';
import { until } from './cluster.js';

/**
 * A real containerd per test agent: its own root, state and gRPC socket from a generated config file (the CRI
 * plugin off), killed by stop(). And a runnable test image: one layer holding a static binary (compiled
 * here with gcc -static) that prints a message, as an OCI-layout archive.
 *
 *   const ctd = await startContainerd();
 *   await ctd.ctr(['images', 'ls']);           // ctr -a <socket> -n k8s.io images ls
 *   await ctd.stop();
 */

export interface Containerd {
  socket: string;
  root: string;
  /** ctr against this containerd, in namespace k8s.io unless `namespace` says otherwise. */
  ctr(args: string[], opts?: { namespace?: string; timeoutMs?: number }): Promise<RunResult>;
  /** Kills it (SIGKILL by default) and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same root, state and socket. */
  restart(): Promise<void>;
}

/** `dir`: where its config, root, state and socket (`<dir>/c.sock`) go; a fresh temp dir by default. */
export async function startContainerd(opts: { dir?: string } = {}): Promise<Containerd> {
  const dir = opts.dir ?? (await tmpDir('stowage-ctd-'));
  const socket = join(dir, 'c.sock');
  const config = join(dir, 'config.toml');
  await writeFile(
    config,
    [
      'version = 2',
      `root = "${join(dir, 'root')}"`,
      `state = "${join(dir, 'state')}"`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      '[grpc]',
      `  address = "${socket}"`,
      '[ttrpc]',
      `  address = "${join(dir, 'c.ttrpc.sock')}"`,
      '[debug]',
      '  address = ""',
      '[plugins."io.containerd.internal.v1.opt"]',
      `  path = "${join(dir, 'opt')}"`,
      '',
    ].join('\n'),
  );
  let child: ChildProcess | undefined;
  let log = '';
  const launch = async (): Promise<void> => {
    const c = spawn('containerd', ['--config', config], { stdio: ['ignore', 'ignore', 'pipe'] });
    c.stderr?.on('data', (b: Buffer) => {
      log = (log + b.toString()).slice(-8192);
    });
    child = c;
    await until(
      `containerd at ${socket}`,
      async () => {
        if (c.exitCode !== null) throw new Error(`containerd exited: ${log}`);
        const r = await run('ctr', ['-a', socket, 'version'], {}, { timeoutMs: 5_000 });
        return r.code === 0 ? true : undefined;
      },
      { timeoutMs: 60_000, everyMs: 200 },
    );
  };
  await launch();
  const stop = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((res) => c.once('exit', () => res()));
    c.kill(signal);
    await exited;
  };
  return {
    socket,
    root: join(dir, 'root'),
    ctr: (args, opts = {}) => run('ctr', ['-a', socket, '-n', opts.namespace ?? 'k8s.io', ...args], {}, { timeoutMs: opts.timeoutMs ?? 120_000 }),
    stop,
    restart: launch,
  };
}

let helloBinary: Promise<Buffer> | undefined;

/** A statically linked program that prints the file /message (built once per test file). */
function staticHello(): Promise<Buffer> {
  helloBinary ??= (async () => {
    const dir = await tmpDir('stowage-hello-');
    const src = join(dir, 'hello.c');
    // The message is read from a file in the image, so one binary serves every test image.
    await writeFile(
      src,
      '#include <stdio.h>\nint main(void){char b[256];FILE*f=fopen("/message","r");if(!f)return 1;size_t n=fread(b,1,sizeof b-1,f);b[n]=0;fputs(b,stdout);return 0;}\n',
    );
    await runOk('gcc', ['-static', '-Os', '-o', join(dir, 'hello'), src]);
    const { readFile } = await import('node:fs/promises');
    return readFile(join(dir, 'hello'));
  })();
  return helloBinary;
}

function sha256(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

async function layerTar(files: Array<{ name: string; data: Buffer; mode: number }>): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => {
    chunks.push(c as Buffer);
  });
  const done = new Promise<void>((res, rej) => {
    pack.on('end', () => res());
    pack.on('error', rej);
  });
  for (const f of files) {
    await new Promise<void>((res, rej) => pack.entry({ name: f.name, mode: f.mode, mtime: new Date(0) }, f.data, (err) => (err ? rej(err) : res())));
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

export interface RunnableImage {
  /** OCI-layout archive of the image (ref name `name`). */
  tar: string;
  /** The OCI layout directory. */
  layout: string;
  manifestDigest: string;
  configDigest: string;
  /** What the image's command prints. */
  message: string;
  /** Total bytes of the layers. */
  layerBytes: number;
  /** Bytes of the config blob. */
  configBytes: number;
}

/**
 * A runnable single-platform linux/amd64 image: layer 1 the static binary and /message, then `extraLayers`
 * layers of `extraBytes` random bytes each (for size tests). Its command prints `message`.
 */
export async function makeRunnableImage(name: string, opts: { message?: string; extraLayers?: number; extraBytes?: number } = {}): Promise<RunnableImage> {
  const message = opts.message ?? `hello from ${name} ${randomBytes(4).toString('hex')}\n`;
  const bin = await staticHello();
  const layout = join(await tmpDir('stowage-runnable-'), 'layout');
  await mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const writeBlob = async (data: Buffer): Promise<{ digest: string; size: number }> => {
    const digest = sha256(data);
    await writeFile(join(layout, 'blobs', 'sha256', digest.slice(7)), data);
    return { digest, size: data.length };
  };
  const tars = [await layerTar([{ name: 'hello', data: bin, mode: 0o755 }, { name: 'message', data: Buffer.from(message), mode: 0o644 }])];
  for (let i = 0; i < (opts.extraLayers ?? 0); i++) tars.push(await layerTar([{ name: `data-${i}.bin`, data: randomBytes(opts.extraBytes ?? 1024), mode: 0o644 }]));
  const layers = [];
  for (const t of tars) layers.push({ ...(await writeBlob(gzipSync(t, { level: 1 }))), diffId: sha256(t) });
  const config = await writeBlob(
    Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        config: { Cmd: ['/hello'], Env: ['PATH=/'] },
        rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      }),
    ),
  );
  const manifestBytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: l.digest, size: l.size })),
    }),
  );
  const manifest = await writeBlob(manifestBytes);
  await writeFile(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': name } }],
    }),
  );
  const tarPath = join(layout, '..', 'image.tar');
  // An OCI-layout archive keeps the manifest digest as built here (a docker-archive would be re-encoded).
  await runOk('tar', ['-C', layout, '-cf', tarPath, '.']);
  await access(tarPath);
  return { tar: tarPath, layout, manifestDigest: manifest.digest, configDigest: config.digest, message, layerBytes: layers.reduce((n, l) => n + l.size, 0), configBytes: config.size };
}
