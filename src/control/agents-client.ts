import { createInterface } from 'node:readline';
import { Agent, type Dispatcher, request } from 'undici';
import { StowageError } from '../errors.js';
import type { MachineRecord } from './machines.js';
import type { RevokedTokens } from './peer-token.js';
import {
  type IncomingRequest,
  type InventoryItem,
  type TransferEvent,
  type TransferRequest,
  agentImageSchema,
  errorBodySchema,
  transferEventSchema,
  unloadResponseSchema,
} from './wire.js';

/**
 * The control plane's calls to an agent's /agent/v1 API, authenticated with the machine's secret.
 * Transfers answer NDJSON; the final line is a result or an error, and a stream that ends without one
 * means the agent (or the link to it) went away.
 */

export type TransferOutcome = Extract<TransferEvent, { type: 'result' | 'error' }>;

const MAX_LINE = 64 * 1024;

export class AgentsClient {
  private readonly dispatcher: Dispatcher;

  constructor(opts: { idleTimeoutMs?: number; tls?: { ca: string; cert: string; key: string } } = {}) {
    // A transfer sends progress lines at least every few seconds; silence for this long means it is gone.
    const idle = opts.idleTimeoutMs ?? 60_000;
    // Agents serving TLS take only clients with a cluster certificate: the control plane presents its own.
    this.dispatcher = new Agent({ headersTimeout: idle, bodyTimeout: idle, connectTimeout: 10_000, ...(opts.tls ? { connect: opts.tls } : {}) });
  }

  /** `signal` only stops following: the agent's transfer goes on (it is shared and outlives its requests). */
  async transfer(
    machine: MachineRecord,
    req: TransferRequest,
    signal: AbortSignal | undefined,
    onProgress: (e: Extract<TransferEvent, { type: 'progress' }>) => void,
  ): Promise<TransferOutcome> {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(new URL('/agent/v1/transfers', machine.agent_url), {
        method: 'POST',
        ...(signal ? { signal } : {}),
        headers: { authorization: `Bearer ${machine.secret}`, 'content-type': 'application/json', accept: 'application/x-ndjson' },
        body: JSON.stringify(req),
        dispatcher: this.dispatcher,
      });
    } catch (err) {
      throw unreachable(machine, err);
    }
    if (res.statusCode !== 200) throw await agentError(machine, res);
    const lines = createInterface({ input: res.body, crlfDelay: Infinity });
    try {
      for await (const line of lines) {
        if (line.trim() === '') continue;
        if (line.length > MAX_LINE) throw new StowageError('AGENT_PROTOCOL', `agent ${machine.id} sent an oversized line`);
        const parsed = transferEventSchema.safeParse(JSON.parse(line));
        if (!parsed.success) throw new StowageError('AGENT_PROTOCOL', `agent ${machine.id} sent an unexpected transfer event`);
        const event = parsed.data;
        if (event.type === 'progress') onProgress(event);
        else return event;
      }
    } catch (err) {
      if (err instanceof StowageError) throw err;
      throw unreachable(machine, err);
    } finally {
      lines.close();
      res.body.destroy();
    }
    throw new StowageError('AGENT_UNREACHABLE', `agent ${machine.id} closed the transfer before it ended`, { details: { machine_id: machine.id } });
  }

  /** Renewed tokens and peers for a transfer the agent runs; false when it runs no such transfer (any more). */
  async refreshTransfer(machine: MachineRecord, req: TransferRequest): Promise<boolean> {
    const res = await this.call(machine, 'POST', '/agent/v1/transfers/refresh', req);
    await res.body.dump();
    if (res.statusCode === 204) return true;
    if (res.statusCode === 404) return false;
    throw new StowageError('AGENT_ERROR', `agent ${machine.id} answered HTTP ${res.statusCode} to a transfer refresh`, { status: 502, details: { machine_id: machine.id } });
  }

  /** The agent's record of a platform manifest, or undefined when it does not hold it. */
  async getImage(machine: MachineRecord, digest: string): Promise<InventoryItem | undefined> {
    const res = await this.call(machine, 'GET', `/agent/v1/images/${digest}`);
    if (res.statusCode === 404) {
      await res.body.dump();
      return undefined;
    }
    if (res.statusCode !== 200) throw await agentError(machine, res);
    return agentImageSchema.parse(await res.body.json());
  }

  async unload(machine: MachineRecord, body: { ref: string; platform?: string | undefined }): Promise<string[] | undefined> {
    const res = await this.call(machine, 'POST', '/agent/v1/unload', body);
    if (res.statusCode === 404) {
      await res.body.dump();
      return undefined;
    }
    if (res.statusCode !== 200) throw await agentError(machine, res);
    return unloadResponseSchema.parse(await res.body.json()).removed;
  }

  /** Tells the agent an image is being pushed to it (its manifest, blobs to expect), for `ttlSeconds` at most. */
  async announceIncoming(machine: MachineRecord, body: IncomingRequest): Promise<void> {
    const res = await this.call(machine, 'POST', '/agent/v1/incoming', body);
    if (res.statusCode !== 204) throw await agentError(machine, res);
    await res.body.dump();
  }

  /** Withdraws the announcement (the push ended); false when the agent had none. */
  async withdrawIncoming(machine: MachineRecord, operationId: string): Promise<boolean> {
    const res = await this.call(machine, 'DELETE', `/agent/v1/incoming/${encodeURIComponent(operationId)}`);
    await res.body.dump();
    return res.statusCode === 204;
  }

  /** Tells the agent to refuse these tokens from now on. */
  async revoke(machine: MachineRecord, tokens: RevokedTokens, signal?: AbortSignal): Promise<void> {
    const res = await this.call(machine, 'POST', '/agent/v1/revocations', tokens, signal);
    await res.body.dump();
    if (res.statusCode !== 200) throw new StowageError('AGENT_ERROR', `agent ${machine.id} answered ${res.statusCode} to a revocation`, { details: { machine_id: machine.id } });
  }

  /** Cuts every call in flight (shutdown must not wait for transfers; the agents carry on with them). */
  async close(): Promise<void> {
    await this.dispatcher.destroy();
  }

  private async call(machine: MachineRecord, method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown, signal?: AbortSignal): Promise<Dispatcher.ResponseData> {
    try {
      return await request(new URL(path, machine.agent_url), {
        method,
        ...(signal ? { signal } : {}),
        headers: { authorization: `Bearer ${machine.secret}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        dispatcher: this.dispatcher,
      });
    } catch (err) {
      throw unreachable(machine, err);
    }
  }
}

function unreachable(machine: MachineRecord, err: unknown): StowageError {
  return new StowageError('AGENT_UNREACHABLE', `agent ${machine.id} at ${machine.agent_url} is unreachable: ${(err as Error).message}`, {
    details: { machine_id: machine.id },
    cause: err,
  });
}

async function agentError(machine: MachineRecord, res: Dispatcher.ResponseData): Promise<StowageError> {
  const text = await res.body.text().catch(() => '');
  let parsed: ReturnType<typeof errorBodySchema.safeParse> | undefined;
  try {
    parsed = errorBodySchema.safeParse(JSON.parse(text));
  } catch {
    parsed = undefined;
  }
  if (parsed?.success) {
    // A target shutting down refuses new work with AGENT_UNREACHABLE: to the operation it went away, as if killed.
    if (parsed.data.error.code === 'AGENT_UNREACHABLE') {
      return new StowageError('AGENT_UNREACHABLE', `agent ${machine.id} went away: ${parsed.data.error.message}`, { details: { machine_id: machine.id } });
    }
    return new StowageError('AGENT_ERROR', `agent ${machine.id}: ${parsed.data.error.code}: ${parsed.data.error.message}`, {
      status: 502,
      details: { machine_id: machine.id, agent_code: parsed.data.error.code },
    });
  }
  return new StowageError('AGENT_ERROR', `agent ${machine.id} answered HTTP ${res.statusCode}`, { status: 502, details: { machine_id: machine.id } });
}
