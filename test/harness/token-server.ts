import { createPrivateKey, randomUUID, sign } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { type IncomingMessage, type Server, createServer } from 'node:http';
import { join } from 'node:path';
import { runOk } from './run.js';

/**
 * A minimal Docker token server (the bearer flow Docker Hub, GHCR, Harbor use) for docker-registry's
 * `auth.token`: GET /token?service=&scope=… with Basic credentials answers an ES256 JWT whose x5c
 * header carries a self-signed certificate (made with the openssl CLI) that the registry trusts.
 * Known user: every requested action is granted; anonymous: a token with no access; wrong password: 401.
 * With `refreshToken`, it also speaks OAuth2: POST /token with grant_type=refresh_token and that token
 * is the known user (any other POST: 401); without it, a POST gets 404 (no OAuth), as Docker Hub's
 * older token services answer.
 */

export interface TokenServer {
  /** "http://127.0.0.1:<port>/token" */
  realm: string;
  service: string;
  issuer: string;
  /** PEM file for the registry's rootcertbundle. */
  certPath: string;
  /** Every token request seen: its scopes and whether it carried valid credentials (`oauth` for a refresh-token POST). */
  requests: Array<{ scopes: string[]; user: string | undefined; oauth?: true }>;
  stop(): Promise<void>;
}

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

export async function startTokenServer(dir: string, user: { user: string; password: string; refreshToken?: string }): Promise<TokenServer> {
  const keyPath = join(dir, 'token-key.pem');
  const certPath = join(dir, 'token-cert.pem');
  await runOk('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyPath, '-out', certPath, '-days', '2', '-subj', '/CN=stowage-test-token',
  ]);
  const key = createPrivateKey(await readFile(keyPath));
  const certDer = Buffer.from(
    (await readFile(certPath, 'utf8')).replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').replace(/\s+/g, ''),
    'base64',
  );
  const service = 'stowage-test-registry';
  const issuer = 'stowage-test-issuer';
  const requests: TokenServer['requests'] = [];

  const whoIs = (req: IncomingMessage): string | undefined | 'bad' => {
    const h = req.headers.authorization;
    if (!h) return undefined;
    const m = /^Basic (.+)$/i.exec(h);
    if (!m) return 'bad';
    const [u, ...rest] = Buffer.from(m[1] ?? '', 'base64').toString('utf8').split(':');
    return u === user.user && rest.join(':') === user.password ? u : 'bad';
  };

  const server: Server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    let who = whoIs(req);
    let scopes = url.searchParams.getAll('scope');
    if (req.method === 'POST') {
      let body = '';
      for await (const chunk of req) body += String(chunk);
      const form = new URLSearchParams(body);
      if (user.refreshToken === undefined) {
        res.writeHead(404).end();
        return;
      }
      const granted = form.get('grant_type') === 'refresh_token' && form.get('refresh_token') === user.refreshToken;
      who = granted ? user.user : 'bad';
      scopes = (form.get('scope') ?? '').split(' ').filter(Boolean);
      if (granted) requests.push({ scopes, user: who, oauth: true });
    } else if (who !== 'bad') {
      requests.push({ scopes, user: who });
    }
    if (url.pathname !== '/token' || who === 'bad') {
      res.writeHead(url.pathname !== '/token' ? 404 : 401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ details: 'incorrect username or password' }));
      return;
    }
    const access = who
      ? scopes.map((s) => {
          const [type, ...restParts] = s.split(':');
          const actions = restParts.pop() ?? '';
          return { type, name: restParts.join(':'), actions: actions.split(',') };
        })
      : [];
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: 'ES256', x5c: [certDer.toString('base64')] };
    const claims = { iss: issuer, sub: who ?? '', aud: url.searchParams.get('service') ?? service, exp: now + 300, nbf: now - 10, iat: now, jti: randomUUID(), access };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const sig = sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
    const token = `${input}.${b64url(sig)}`;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token, access_token: token, expires_in: 300, issued_at: new Date().toISOString() }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    certPath,
    requests,
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
