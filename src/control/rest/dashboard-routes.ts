import { createReadStream, existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { dirname, extname, join, resolve, sep } from 'node:path';
import type { FastifyInstance, FastifyReply } from 'fastify';

/**
 * The web dashboard (src/web, built by Vite into dist/web) served at /ui/. It is a single-page app: a
 * path that is no built file answers index.html and the app routes on the URL hash. The files are
 * public (no data in them); everything the app shows comes from the authenticated API.
 */

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
  '.map': 'application/json',
  '.woff2': 'font/woff2',
};

/** The app talks only to this origin; no framing, no sniffing. Pico's icons are data: SVGs. */
const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

const NOT_BUILT = `<!doctype html><html><head><meta charset="utf-8"><title>Stowage dashboard not built</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:3em auto"><h1>The dashboard is not built</h1>
<p>This control plane found no built dashboard in <code>%DIR%</code>. Build it with <code>npm run build</code>
(or <code>npm ci</code>, which builds it) and reload this page; the control plane need not restart.</p></body></html>`;

/** dist/web of the package this module belongs to (from src/control/rest or from the bundled dist/). */
export function defaultWebDir(): string {
  let dir = import.meta.dirname;
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return join(dir, 'dist', 'web');
    const up = dirname(dir);
    if (up === dir) return join(import.meta.dirname, 'web');
    dir = up;
  }
}

export function dashboardRoutes(app: FastifyInstance, webDir: string = defaultWebDir()): void {
  const root = resolve(webDir);

  const sendFile = async (reply: FastifyReply, file: string, immutable: boolean) => {
    const info = await stat(file);
    return reply
      .headers(SECURITY_HEADERS)
      .header('content-type', CONTENT_TYPES[extname(file)] ?? 'application/octet-stream')
      .header('content-length', info.size)
      .header('cache-control', immutable ? 'public, max-age=31536000, immutable' : 'no-cache')
      .send(createReadStream(file));
  };

  const isFile = async (path: string) => (await stat(path).catch(() => undefined))?.isFile() === true;

  app.get('/ui', async (_request, reply) => reply.redirect('/ui/'));
  app.get<{ Params: { '*': string } }>('/ui/*', async (request, reply) => {
    const rel = request.params['*'];
    // Only plain relative paths inside the build: no dot segments, hidden files, backslashes or NULs.
    const safe = rel.split('/').every((seg) => seg === '' || (!seg.startsWith('.') && !/[\\\0]/.test(seg)));
    if (safe && rel !== '') {
      const file = resolve(root, rel);
      if (file.startsWith(root + sep) && (await isFile(file))) return sendFile(reply, file, rel.startsWith('assets/'));
      // A missing asset is a 404; any other path is a route of the app.
      if (rel.startsWith('assets/') || extname(rel) !== '') {
        return reply.code(404).send({ error: { code: 'NOT_FOUND', message: `no file ${rel} in the dashboard` } });
      }
    } else if (!safe) {
      return reply.code(400).send({ error: { code: 'BAD_REQUEST', message: 'bad dashboard path' } });
    }
    const index = join(root, 'index.html');
    if (!(await isFile(index))) {
      return reply.code(503).headers(SECURITY_HEADERS).type('text/html; charset=utf-8').send(NOT_BUILT.replace('%DIR%', escapeHtml(root)));
    }
    return sendFile(reply, index, false);
  });
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
