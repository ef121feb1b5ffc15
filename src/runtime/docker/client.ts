import type { Readable } from 'node:stream';
import { Agent, type Dispatcher, request } from 'undici';
import { StowageError } from '../../errors.js';

/**
 * The few Docker Engine API calls the docker runtime needs (Docker Engine or Podman's compatible service on a
 * unix socket): list images, load an archive streamed in, tag, remove, and the event stream.
 */

export interface EngineImage {
  Id: string;
  RepoTags: string[] | null;
  /** "repo@sha256:…": the registry manifest digest of an image pulled by that repository. */
  RepoDigests?: string[] | null;
  /** Podman only: the digest of the image's manifest (for a pulled image, the registry's, per platform). */
  Digest?: string;
  Size?: number;
}

/** The part of GET /images/{id}/json the inventory needs. */
export interface EngineImageDetails {
  Architecture?: string;
  Os?: string;
  Variant?: string;
  Created?: string;
  Size?: number;
}

const API = '/v1.41';

export class DockerEngineClient {
  private readonly dispatcher: Agent;

  constructor(readonly socket: string) {
    this.dispatcher = new Agent({ connect: { socketPath: socket }, bodyTimeout: 0, headersTimeout: 60_000 });
  }

  private async call(method: Dispatcher.HttpMethod, path: string, what: string, opts: { body?: Readable; headers?: Record<string, string> } = {}): Promise<Dispatcher.ResponseData> {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(`http://localhost${API}${path}`, { method, dispatcher: this.dispatcher, ...(opts.body ? { body: opts.body } : {}), ...(opts.headers ? { headers: opts.headers } : {}) });
    } catch (err) {
      throw new StowageError('RUNTIME_UNAVAILABLE', `the Docker API at ${this.socket} is not answering (${what}): ${(err as Error).message}`);
    }
    if (res.statusCode >= 400) {
      const text = (await res.body.text().catch(() => '')).slice(0, 2000);
      let message = text;
      try {
        message = (JSON.parse(text) as { message?: string }).message ?? text;
      } catch {
        // not JSON
      }
      throw new StowageError(res.statusCode === 404 ? 'IMAGE_NOT_FOUND' : 'RUNTIME_ERROR', `the Docker API at ${this.socket} refused ${what} (HTTP ${res.statusCode}): ${message}`, {
        details: { status: res.statusCode },
      });
    }
    return res;
  }

  async listImages(): Promise<EngineImage[]> {
    const res = await this.call('GET', '/images/json', 'image list');
    return (await res.body.json()) as EngineImage[];
  }

  async inspect(id: string): Promise<EngineImageDetails> {
    const res = await this.call('GET', `/images/${encodeURIComponent(id)}/json`, `inspect of ${id}`);
    return (await res.body.json()) as EngineImageDetails;
  }

  /** POST /images/load with `archive` as the body; reads the answer through and throws on an error line. */
  async load(archive: Readable): Promise<void> {
    const res = await this.call('POST', '/images/load?quiet=1', 'image load', { body: archive, headers: { 'content-type': 'application/x-tar' } });
    const text = await res.body.text();
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      let msg: { error?: string; errorDetail?: { message?: string } };
      try {
        msg = JSON.parse(line) as typeof msg;
      } catch {
        continue;
      }
      if (msg.error) throw new StowageError('RUNTIME_ERROR', `the Docker API at ${this.socket} could not load the image: ${msg.errorDetail?.message ?? msg.error}`);
    }
  }

  async tag(id: string, reference: string): Promise<void> {
    const at = reference.lastIndexOf(':');
    const repo = reference.slice(0, at);
    const tag = reference.slice(at + 1);
    const res = await this.call('POST', `/images/${encodeURIComponent(id)}/tag?repo=${encodeURIComponent(repo)}&tag=${encodeURIComponent(tag)}`, `tag ${reference}`);
    await res.body.dump();
  }

  async remove(name: string): Promise<void> {
    try {
      const res = await this.call('DELETE', `/images/${encodeURIComponent(name)}?force=1`, `removal of ${name}`);
      await res.body.dump();
    } catch (err) {
      if (!(err instanceof StowageError && err.code === 'IMAGE_NOT_FOUND')) throw err;
    }
  }

  /** The image event stream: one callback per event line, until the stream ends or fails (the promise says which). */
  async events(onEvent: () => void, signal: AbortSignal): Promise<void> {
    const filters = encodeURIComponent(JSON.stringify({ type: ['image'] }));
    const res = await request(`http://localhost${API}/events?filters=${filters}`, { dispatcher: this.dispatcher, signal });
    if (res.statusCode >= 400) {
      await res.body.dump();
      throw new StowageError('RUNTIME_ERROR', `the Docker API at ${this.socket} refused the event stream (HTTP ${res.statusCode})`);
    }
    onEvent(); // the stream is up: one re-list picks up what happened while it was not
    for await (const chunk of res.body) if ((chunk as Buffer).includes(0x0a)) onEvent();
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }
}
