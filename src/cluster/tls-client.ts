import { rootCertificates } from 'node:tls';
import { Agent, type Dispatcher, interceptors } from 'undici';

/** What a cluster member presents and trusts on its outgoing connections. */
export interface ClientTls {
  /** The cluster CA (PEM); without it, the system roots only. */
  ca?: string;
  /** This member's certificate and key (PEM), presented for mutual TLS. */
  cert?: string;
  key?: string;
}

/**
 * How a cluster member reaches its peers over TLS: the dispatcher for requests in general, and the same
 * material for the blob reads that bypass undici (registry/direct-get.ts).
 */
export interface PeerTlsClient {
  dispatcher: Dispatcher;
  tls: ClientTls;
}

/**
 * An undici dispatcher for a cluster member's requests: the cluster CA trusted beside the system roots
 * (transfers also reach public registries through it), its certificate presented, redirects followed
 * (blob CDNs), as the registry client's default dispatcher does.
 */
export function clusterDispatcher(tls: ClientTls, opts: { headersTimeout?: number; bodyTimeout?: number; connections?: number } = {}): Dispatcher {
  return new Agent({
    headersTimeout: opts.headersTimeout ?? 60_000,
    bodyTimeout: opts.bodyTimeout ?? 300_000,
    ...(opts.connections ? { connections: opts.connections } : {}),
    connect: { ca: [...rootCertificates, ...(tls.ca ? [tls.ca] : [])], ...(tls.cert && tls.key ? { cert: tls.cert, key: tls.key } : {}) },
  }).compose(interceptors.redirect({ maxRedirections: 5 }));
}
