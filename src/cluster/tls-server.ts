import type { IncomingMessage, RequestListener, Server, ServerResponse } from 'node:http';
import { type Server as HttpsServer, createServer } from 'node:https';

/** A certificate to serve with and the CA whose certificates are accepted from clients (PEM). */
export interface ServingTls {
  key: string;
  cert: string;
  ca: string;
}

/**
 * A Fastify serverFactory for an HTTPS server that takes only clients with a certificate from the cluster
 * CA (mutual TLS). It may start before there is a certificate to serve (an agent not yet joined): until
 * `setCertificate`, every handshake fails.
 */
export function mutualTlsServer(initial: ServingTls | undefined): {
  serverFactory: (handler: RequestListener<typeof IncomingMessage, typeof ServerResponse>) => Server;
  setCertificate(tls: ServingTls): void;
} {
  let server: HttpsServer | undefined;
  let pending = initial;
  return {
    serverFactory: (handler) => {
      server = createServer({ requestCert: true, rejectUnauthorized: true, ...(pending ? { key: pending.key, cert: pending.cert, ca: [pending.ca] } : {}) }, handler);
      // Fastify wants an http.Server; an https.Server is one for everything it does with it.
      return server as unknown as Server;
    },
    setCertificate(tls) {
      pending = tls;
      server?.setSecureContext({ key: tls.key, cert: tls.cert, ca: [tls.ca] });
    },
  };
}
