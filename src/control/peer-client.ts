import type { Dispatcher } from 'undici';
import { RegistryClient } from '../registry/client.js';
import type { MachineRecord } from './machines.js';
import { mintPeerToken } from './peer-token.js';

/** A pull-only peer token for the machine's /v2/, valid `ttlSeconds`, naming the operation it serves. */
export function pullToken(machine: MachineRecord, ttlSeconds: number, operationId?: string): string {
  return mintPeerToken(machine.secret, { m: machine.id, s: 'pull', exp: Math.floor(Date.now() / 1000) + ttlSeconds, ...(operationId ? { op: operationId } : {}) });
}

/**
 * The control plane reading a machine's /v2/ itself (inspect, checking an upload), with a pull token; over
 * mutual TLS (`tls`: a dispatcher presenting the control plane's certificate) when the agent serves https.
 */
export function peerRegistryClient(machine: MachineRecord, tls?: Dispatcher): RegistryClient {
  const url = new URL(machine.agent_url);
  const https = url.protocol === 'https:' && tls !== undefined;
  return new RegistryClient({
    host: url.host,
    insecure: url.protocol === 'http:',
    ...(https ? { forceHttps: true, dispatcher: tls } : {}),
    credentials: { username: 'stowage', password: pullToken(machine, 60) },
  });
}
