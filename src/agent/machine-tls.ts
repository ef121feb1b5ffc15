import { type KeyObject, X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { join } from 'node:path';
import { Agent, type Dispatcher, request } from 'undici';
import { certificateExpiry, certificateFingerprint, createCsr, issuedBy } from '../cluster/pki.js';
import { type PeerTlsClient, clusterDispatcher } from '../cluster/tls-client.js';
import { parseJoinToken, readOptional, tlsDir, writePrivateFile } from '../cluster/tls-files.js';
import { certificateResponseSchema } from '../control/wire.js';
import { StowageError } from '../errors.js';
import { ensurePrivateDir } from '../private-files.js';
import type { Identity } from './identity.js';

/**
 * An agent's side of the cluster's TLS (when its control plane URL is https://): the cluster CA, pinned by
 * the join token the first time and kept in <dataDir>/tls/ca.pem; the machine certificate and key the
 * control plane signed from this machine's CSR (tls/machine.pem, tls/machine.key), renewed at two thirds
 * of its lifetime; and the dispatchers that present it. Whoever serves with it hears of each new one.
 */

export interface MachineCertificate {
  ca: string;
  cert: string;
  key: string;
}

const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 30_000;

export class MachineTls {
  private ca: string | undefined;
  private current: MachineCertificate | undefined;
  private pendingKey: string | undefined;
  private control: Dispatcher | undefined;
  private peers: PeerTlsClient | undefined;
  private readonly listeners = new Set<(cert: MachineCertificate) => void>();
  private renewTimer: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(
    private readonly dataDir: string,
    private readonly controlUrl: string,
    private readonly joinToken: string | undefined,
    private readonly identity: () => Identity | undefined,
    private readonly log: (line: string) => void,
  ) {}

  /** Loads what an earlier run kept (the CA, a certificate not yet expired). */
  static async open(opts: { dataDir: string; controlUrl: string; joinToken: string | undefined; identity: () => Identity | undefined; log: (line: string) => void }): Promise<MachineTls> {
    const tls = new MachineTls(opts.dataDir, opts.controlUrl, opts.joinToken, opts.identity, opts.log);
    const dir = tlsDir(opts.dataDir);
    await ensurePrivateDir(dir);
    tls.ca = await readOptional(join(dir, 'ca.pem'));
    const [cert, key] = await Promise.all([readOptional(join(dir, 'machine.pem')), readOptional(join(dir, 'machine.key'))]);
    if (tls.ca && cert && key && issuedBy(cert, tls.ca)) tls.current = { ca: tls.ca, cert, key };
    return tls;
  }

  /** The certificate to serve and present now; undefined until the machine has joined over TLS. */
  get certificate(): MachineCertificate | undefined {
    return this.current;
  }

  /** Calls `listener` with every new certificate (a server sets it as its secure context). */
  onCertificate(listener: (cert: MachineCertificate) => void): void {
    this.listeners.add(listener);
  }

  /**
   * The dispatcher for the control plane: it is verified against the cluster CA. The first time, the CA is
   * fetched and accepted only if its fingerprint is the one the join token pins.
   */
  async controlDispatcher(): Promise<Dispatcher> {
    if (this.control) return this.control;
    const ca = this.ca ?? (await this.fetchPinnedCa());
    this.control = new Agent({ connect: { ca: [ca] } });
    return this.control;
  }

  /** How to reach peers' /v2/, presenting this machine's certificate; undefined before there is one. */
  peerClient(): PeerTlsClient | undefined {
    if (!this.peers && this.current) this.peers = { dispatcher: clusterDispatcher(this.current), tls: this.current };
    return this.peers;
  }

  /** A CSR for a new key (kept until its certificate comes back through accept). */
  async csr(): Promise<string> {
    const { keyPem, csrPem } = await createCsr('stowage-agent');
    this.pendingKey = keyPem;
    return csrPem;
  }

  /** Takes the certificate signed for the last CSR: checks it, keeps it, hands it to servers and dispatchers. */
  async accept(certPem: string): Promise<void> {
    const key = this.pendingKey;
    const ca = this.ca;
    if (!key || !ca) throw new StowageError('BAD_REQUEST', 'a machine certificate came without a CSR having been sent');
    if (!issuedBy(certPem, ca)) throw new StowageError('UNAUTHORIZED', 'the control plane answered with a certificate the cluster CA did not sign');
    // A join and a renewal racing each other must not pair one's certificate with the other's key.
    if (!certifiesKey(certPem, key)) throw new StowageError('CONFLICT', 'the machine certificate is not for the key of the last CSR; asking again');
    const dir = tlsDir(this.dataDir);
    await writePrivateFile(join(dir, 'machine.key'), key);
    await writePrivateFile(join(dir, 'machine.pem'), certPem);
    this.pendingKey = undefined;
    this.current = { ca, cert: certPem, key };
    const old = this.peers;
    this.peers = { dispatcher: clusterDispatcher(this.current), tls: this.current };
    // Transfers under way keep the old dispatcher's connections until they end.
    if (old) setTimeout(() => void old.dispatcher.close().catch(() => undefined), 60_000).unref();
    for (const l of this.listeners) l(this.current);
    this.scheduleRenewal();
  }

  /**
   * Starts renewing before expiry (at two thirds of the lifetime; at once when that is past, or when a
   * machine that joined earlier has no valid certificate left).
   */
  scheduleRenewal(delayMs?: number): void {
    if (this.closed) return;
    clearTimeout(this.renewTimer);
    let wait = delayMs ?? 0;
    if (delayMs === undefined && this.current) {
      const { notBefore, notAfter } = certificateExpiry(this.current.cert);
      wait = notBefore.getTime() + ((notAfter.getTime() - notBefore.getTime()) * 2) / 3 - Date.now();
    }
    this.renewTimer = setTimeout(() => void this.renew(), Math.max(0, wait));
    this.renewTimer.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.renewTimer);
    await Promise.allSettled([this.control, this.peers?.dispatcher].flatMap((dispatcher) => (dispatcher ? [dispatcher.close()] : [])));
  }

  private async renew(): Promise<void> {
    const identity = this.identity();
    if (this.closed) return;
    if (!identity) {
      this.scheduleRenewal(RETRY_MAX_MS); // not joined yet: the join brings a certificate
      return;
    }
    try {
      const csr = await this.csr();
      const res = await request(`${this.controlUrl}/api/v1/machines/${encodeURIComponent(identity.machine_id)}/certificate`, {
        method: 'POST',
        headers: { authorization: `Bearer ${identity.machine_secret}`, 'content-type': 'application/json' },
        body: JSON.stringify({ csr }),
        dispatcher: await this.controlDispatcher(),
        headersTimeout: 30_000,
        bodyTimeout: 30_000,
      });
      const text = await res.body.text();
      if (res.statusCode !== 200) throw new Error(`HTTP ${res.statusCode}: ${text.slice(0, 200)}`);
      await this.accept(certificateResponseSchema.parse(JSON.parse(text)).certificate);
      this.log(`machine certificate renewed (valid until ${this.current ? certificateExpiry(this.current.cert).notAfter.toISOString() : '?'})`);
    } catch (err) {
      // Retried well before expiry: a tenth of what is left, within bounds.
      const left = this.current ? certificateExpiry(this.current.cert).notAfter.getTime() - Date.now() : 0;
      const retry = Math.min(RETRY_MAX_MS, Math.max(RETRY_MIN_MS, left / 10));
      this.log(`renewing the machine certificate failed (${(err as Error).message}); retrying in ${Math.round(retry / 1000)} s`);
      this.scheduleRenewal(retry);
    }
  }

  private async fetchPinnedCa(): Promise<string> {
    const pin = this.joinToken ? parseJoinToken(this.joinToken).caFingerprint : undefined;
    if (!pin) {
      throw new StowageError(
        'BAD_REQUEST',
        `${this.controlUrl} is https:// but ${tlsDir(this.dataDir)}/ca.pem is missing and the join token pins no CA: use the join token \`stowd init\` wrote (sjt_…@sha256:…)`,
      );
    }
    // Not verified yet on purpose: what comes back is trusted only if it is the pinned CA.
    const insecure = new Agent({ connect: { rejectUnauthorized: false } });
    try {
      const res = await request(`${this.controlUrl}/api/v1/ca`, { dispatcher: insecure, headersTimeout: 30_000, bodyTimeout: 30_000 });
      const pem = await res.body.text();
      if (res.statusCode !== 200) throw new Error(`GET /api/v1/ca answered HTTP ${res.statusCode}`);
      let fingerprint: string;
      try {
        fingerprint = certificateFingerprint(pem);
      } catch {
        throw new Error('GET /api/v1/ca answered no certificate');
      }
      if (fingerprint !== pin) throw new StowageError('UNAUTHORIZED', `the control plane's CA (sha256 ${fingerprint}) is not the one the join token pins (${pin})`);
      await writePrivateFile(join(tlsDir(this.dataDir), 'ca.pem'), pem);
      this.ca = pem;
      return pem;
    } finally {
      await insecure.close();
    }
  }
}

function certifiesKey(certPem: string, keyPem: string): boolean {
  const spki = (k: KeyObject): Buffer => k.export({ type: 'spki', format: 'der' });
  return spki(new X509Certificate(certPem).publicKey).equals(spki(createPublicKey(createPrivateKey(keyPem))));
}

