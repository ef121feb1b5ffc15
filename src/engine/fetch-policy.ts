import { lookup as dnsLookup, type LookupAddress, type LookupAllOptions, type LookupOneOptions } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import { Readable } from 'node:stream';
import { Agent, request } from 'undici';
import { StowageError } from '../errors.js';

/**
 * What the engine may download on a client's behalf (`docker import <url>`, `ADD <url>` in a build): the agent
 * fetches, so a URL must not reach what only the agent can reach. Addresses in loopback, link-local, private
 * and other special ranges are refused unless the allow-list names them; the check is on the address actually
 * connected to (after DNS), and again for every redirect. The body is bounded.
 */
export interface FetchPolicy {
  /**
   * Exceptions to the refused ranges: an IP address, a CIDR (`10.1.0.0/16`, `fd00::/8`) or a host with an
   * optional port (`files.internal`, `127.0.0.1:8080`), matched against the URL.
   */
  allow: string[];
  /** Largest body downloaded, in bytes. */
  maxBytes: number;
}

export const DEFAULT_FETCH_MAX_BYTES = 2 * 1024 ** 3;
export const DEFAULT_FETCH_POLICY: FetchPolicy = { allow: [], maxBytes: DEFAULT_FETCH_MAX_BYTES };
/** As Go's http.Client. */
const MAX_REDIRECTS = 10;

/** Loopback, "this network", private, shared (CGNAT), link-local, benchmarking, multicast and reserved ranges. */
const REFUSED = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  REFUSED.addSubnet(net, bits, 'ipv4');
}
for (const [net, bits] of [
  ['::', 127], // unspecified and loopback
  ['64:ff9b::', 96], // NAT64 (embeds IPv4 addresses)
  ['fc00::', 7], // unique local
  ['fe80::', 10], // link-local
  ['ff00::', 8], // multicast
] as const) {
  REFUSED.addSubnet(net, bits, 'ipv6');
}

function family(address: string): 'ipv4' | 'ipv6' {
  return isIP(address) === 6 ? 'ipv6' : 'ipv4';
}

/** The IPv4 address an IPv4-mapped IPv6 address (::ffff:a.b.c.d) carries, else the address as it is. */
function unmapped(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? m[1]! : address;
}

function allowedAddress(policy: FetchPolicy, address: string): boolean {
  const a = unmapped(address);
  for (const entry of policy.allow) {
    const slash = entry.indexOf('/');
    if (slash > 0) {
      const net = entry.slice(0, slash);
      const bits = Number(entry.slice(slash + 1));
      if (isIP(net) === 0 || !Number.isInteger(bits)) continue;
      const list = new BlockList();
      list.addSubnet(net, bits, family(net));
      if (list.check(a, family(a))) return true;
    } else if (isIP(entry) !== 0 && entry === a) return true;
  }
  return false;
}

function allowedHost(policy: FetchPolicy, url: URL): boolean {
  const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  const port = url.port || (url.protocol === 'https:' ? '443' : '80');
  return policy.allow.some((entry) => {
    const e = entry.toLowerCase();
    return e === host || e === `${host}:${port}` || e === `[${host}]:${port}`;
  });
}

function refused(url: URL, address: string): StowageError {
  return new StowageError('FORBIDDEN', `refusing to download ${url.href}: ${address} is a loopback, link-local or private address (allow it in the agent's engine.fetch.allow)`, {
    status: 403,
  });
}

/** Whether the agent may connect to `address` for `url`. */
export function mayConnect(policy: FetchPolicy, url: URL, address: string): boolean {
  const a = unmapped(address);
  if (!REFUSED.check(a, family(a))) return true;
  return allowedHost(policy, url) || allowedAddress(policy, a);
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/** A DNS lookup for net.connect that fails when any resolved address is refused for `url`. */
function checkedLookup(policy: FetchPolicy, url: URL) {
  return (hostname: string, options: LookupOneOptions | LookupAllOptions, callback: LookupCallback): void => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, '');
      const list = addresses as LookupAddress[];
      const bad = list.find((a) => !mayConnect(policy, url, a.address));
      if (bad) return callback(refused(url, bad.address) as unknown as NodeJS.ErrnoException, '');
      if ((options as LookupAllOptions).all) return callback(null, list);
      const first = list[0];
      if (!first) return callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), '');
      return callback(null, first.address, first.family);
    });
  };
}

export interface FetchedUrl {
  /** The URL finally answered (after redirects). */
  url: URL;
  headers: Record<string, string | string[] | undefined>;
  /** The body, ending in an error past policy.maxBytes. */
  body: Readable;
}

function checkUrl(url: URL, original: string): void {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new StowageError('BAD_REQUEST', `refusing to download ${original}: unsupported URL scheme ${url.protocol}`);
  }
}

/** GET `href` under the policy, following redirects (each one checked again). Throws on a non-2xx answer. */
export async function fetchUnderPolicy(policy: FetchPolicy, href: string, signal?: AbortSignal): Promise<FetchedUrl> {
  let url: URL;
  try {
    url = new URL(href);
  } catch {
    throw new StowageError('BAD_REQUEST', `invalid URL: ${href}`);
  }
  for (let hop = 0; ; hop++) {
    checkUrl(url, href);
    const literal = url.hostname.replace(/^\[|\]$/g, '');
    if (isIP(literal) !== 0 && !mayConnect(policy, url, literal)) throw refused(url, literal);
    const agent = new Agent({ connect: { lookup: checkedLookup(policy, url) } });
    let res;
    try {
      res = await request(url, { method: 'GET', dispatcher: agent, signal });
    } catch (err) {
      await agent.close().catch(() => undefined);
      const cause = (err as { cause?: unknown }).cause;
      if (err instanceof StowageError) throw err;
      if (cause instanceof StowageError) throw cause;
      throw new StowageError('BAD_REQUEST', `failed to download ${url.href}: ${(err as Error).message}`, { cause: err });
    }
    const location = res.headers['location'];
    if (res.statusCode >= 300 && res.statusCode < 400 && typeof location === 'string') {
      res.body.resume();
      await agent.close().catch(() => undefined);
      if (hop >= MAX_REDIRECTS) throw new StowageError('BAD_REQUEST', `failed to download ${href}: stopped after ${MAX_REDIRECTS} redirects`);
      url = new URL(location, url);
      continue;
    }
    if (res.statusCode < 200 || res.statusCode >= 300) {
      res.body.resume();
      await agent.close().catch(() => undefined);
      throw new StowageError('BAD_REQUEST', `failed to download ${url.href}: HTTP ${res.statusCode}`);
    }
    const declared = Number(res.headers['content-length']);
    if (Number.isFinite(declared) && declared > policy.maxBytes) {
      res.body.destroy();
      await agent.close().catch(() => undefined);
      throw tooLarge(url, policy);
    }
    const body = Readable.from(bounded(res.body, policy, url));
    body.once('close', () => void agent.close().catch(() => undefined));
    return { url, headers: res.headers, body };
  }
}

function tooLarge(url: URL, policy: FetchPolicy): StowageError {
  return new StowageError('TOO_LARGE', `refusing to download ${url.href}: larger than ${policy.maxBytes} bytes`, { status: 413 });
}

async function* bounded(source: AsyncIterable<Uint8Array>, policy: FetchPolicy, url: URL): AsyncGenerator<Uint8Array> {
  let total = 0;
  for await (const chunk of source) {
    total += chunk.byteLength;
    if (total > policy.maxBytes) throw tooLarge(url, policy);
    yield chunk;
  }
}
