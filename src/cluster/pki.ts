// @peculiar/x509 resolves its services through tsyringe, which needs the Reflect metadata polyfill first.
import 'reflect-metadata';
import { X509Certificate as NodeX509, createPublicKey, randomBytes, webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';
import { StowageError } from '../errors.js';

/**
 * The cluster's certificates: one CA (ECDSA P-256) made by `stowd init`; the control plane's certificate,
 * machine certificates signed from agents' CSRs, and client certificates for people, all issued by it.
 * Keys and certificates travel as PEM (PKCS#8 keys), what node:tls and the docker CLI read.
 */

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
/** Certificates start a little in the past: a clock a minute behind must not see them as not yet valid. */
const BACKDATE_MS = 5 * 60 * 1000;
const CA_LIFETIME_MS = 10 * 365 * 24 * 3600 * 1000;

export interface KeyPair {
  keyPem: string;
  certPem: string;
}

/** Which side of a TLS connection a certificate is for: serverAuth, clientAuth or both. */
export type CertificateUse = 'server' | 'client' | 'both';

async function generateKeys(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
}

async function privateKeyPem(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

async function importPrivateKey(pem: string): Promise<CryptoKey> {
  return webcrypto.subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(pem), EC, false, ['sign']);
}

function serialNumber(): string {
  // Positive (top bit clear) and unique enough to never repeat in one cluster.
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] ?? 0) & 0x7f;
  return bytes.toString('hex');
}

/** A distinguished-name value safe to put in "CN=…". */
function commonName(name: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/.test(name)) throw new StowageError('BAD_REQUEST', `"${name}" cannot be a certificate name (letters, digits, . _ @ -)`);
  return `CN=${name}`;
}

/** The cluster CA: self-signed, may sign end-entity certificates only. */
export async function createCa(name = 'Stowage cluster CA'): Promise<KeyPair> {
  const keys = await generateKeys();
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: `CN=${name}, O=Stowage`,
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: new Date(now + CA_LIFETIME_MS),
    keys,
    signingAlgorithm: EC,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await privateKeyPem(keys.privateKey) };
}

/** SHA-256 over the certificate's DER, lowercase hex: what a join token pins. */
export function certificateFingerprint(certPem: string): string {
  return new NodeX509(certPem).fingerprint256.replaceAll(':', '').toLowerCase();
}

/** When the certificate stops being valid. */
export function certificateExpiry(certPem: string): { notBefore: Date; notAfter: Date } {
  const cert = new NodeX509(certPem);
  return { notBefore: new Date(cert.validFrom), notAfter: new Date(cert.validTo) };
}

/** True when `certPem` was signed by the CA (and is within its validity). */
export function issuedBy(certPem: string, caPem: string): boolean {
  try {
    const cert = new NodeX509(certPem);
    const ca = new NodeX509(caPem);
    const now = Date.now();
    return cert.checkIssued(ca) && cert.verify(ca.publicKey) && new Date(cert.validFrom).getTime() <= now && now < new Date(cert.validTo).getTime();
  } catch {
    return false;
  }
}

function subjectAltNames(names: readonly string[]): x509.SubjectAlternativeNameExtension {
  const entries = [...new Set(names)].map((n) => (isIP(n) ? { type: 'ip' as const, value: n } : { type: 'dns' as const, value: n }));
  return new x509.SubjectAlternativeNameExtension(entries, false);
}

export interface IssueOptions {
  /** The subject's common name (machine ID, user name, "control-plane"). */
  name: string;
  /** DNS names and IP addresses the certificate is valid for (servers). */
  altNames?: readonly string[];
  use: CertificateUse;
  lifetimeMs: number;
}

async function issue(ca: KeyPair, publicKey: CryptoKey, opts: IssueOptions): Promise<string> {
  const caCert = new x509.X509Certificate(ca.certPem);
  const now = Date.now();
  const usages = { server: [x509.ExtendedKeyUsage.serverAuth], client: [x509.ExtendedKeyUsage.clientAuth], both: [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth] }[opts.use];
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
    new x509.ExtendedKeyUsageExtension(usages, false),
    await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
  ];
  if (opts.altNames && opts.altNames.length > 0) extensions.push(subjectAltNames(opts.altNames));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: commonName(opts.name),
    issuer: caCert.subject,
    notBefore: new Date(now - Math.min(BACKDATE_MS, opts.lifetimeMs / 4)),
    notAfter: new Date(now + opts.lifetimeMs),
    publicKey,
    signingKey: await importPrivateKey(ca.keyPem),
    signingAlgorithm: EC,
    extensions,
  });
  return cert.toString('pem');
}

/** A new key and a certificate for it, signed by the CA (the control plane's own, a user's client certificate). */
export async function issueKeyPair(ca: KeyPair, opts: IssueOptions): Promise<KeyPair> {
  const keys = await generateKeys();
  return { certPem: await issue(ca, keys.publicKey, opts), keyPem: await privateKeyPem(keys.privateKey) };
}

/** A new key and a CSR for it: what an agent sends to be given its machine certificate. */
export async function createCsr(name: string): Promise<{ keyPem: string; csrPem: string }> {
  const keys = await generateKeys();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: commonName(name), keys, signingAlgorithm: EC });
  return { keyPem: await privateKeyPem(keys.privateKey), csrPem: csr.toString('pem') };
}

/**
 * Signs a CSR after checking its self-signature (the sender holds the key). Only the key is taken from
 * it: the name and addresses come from `opts`, what the control plane knows of the machine.
 */
export async function signCsr(ca: KeyPair, csrPem: string, opts: IssueOptions): Promise<string> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch {
    throw new StowageError('BAD_REQUEST', 'csr is not a PEM certificate signing request');
  }
  if (!(await csr.verify())) throw new StowageError('BAD_REQUEST', 'the CSR signature does not verify');
  const algorithm = csr.publicKey.algorithm as EcKeyAlgorithm;
  if (algorithm.name !== 'ECDSA' || algorithm.namedCurve !== 'P-256') throw new StowageError('BAD_REQUEST', 'the CSR key must be ECDSA P-256');
  // Re-imported through node:crypto first: a key the platform cannot parse is refused here, not at signing.
  createPublicKey({ key: Buffer.from(csr.publicKey.rawData), format: 'der', type: 'spki' });
  return issue(ca, await csr.publicKey.export(EC, ['verify']), opts);
}
