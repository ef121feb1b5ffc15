import { createHash, createHmac } from 'node:crypto';
import { request } from 'undici';

/**
 * A port of what Backend.AI's Python client SDK does on the wire (ai.backend.client: config.py,
 * session.py, request.py, auth.py, func/admin.py, func/bgtask.py), to replay its documents exactly:
 *   - GET <endpoint> unsigned with only User-Agent, reads {"version"}, speaks min(server, client);
 *   - every request signed: Date = datetime.now(tzutc()).isoformat(), X-BackendAI-Version, X-BackendAI-Domain,
 *     Authorization "BackendAI signMethod=HMAC-SHA256, credential=<ak>:<sig>" over method, path?query,
 *     date, host (the endpoint's netloc), lower-cased content type, version and sha256(b"");
 *   - Admin._query: POST /admin/gql {"query", "variables"} (json.dumps spacing), errors raise;
 *   - BackgroundTask.listen_events: GET /events/background-task?task_id=<uuid> (content type
 *     application/octet-stream, signed but not sent), read by SSEResponse.fetch_events.
 */

export interface Keypair {
  access_key: string;
  secret_key: string;
}

export function parseApiVersion(v: string): [number, string] {
  const m = /^v(\d+)\.(\d{8})$/.exec(v);
  if (!m) throw new Error(`Could not parse the given API version string ${v}`);
  return [Number(m[1]), m[2] as string];
}

/** Python's datetime.now(tzutc()).isoformat(): microseconds and +00:00. */
export function pythonIsoNow(now = new Date(), micros = 1 + Math.floor(Math.random() * 999)): string {
  return `${now.toISOString().slice(0, 23)}${String(micros).padStart(3, '0')}+00:00`;
}

/** Python's json.dumps default separators: ", " and ": ". */
export function pythonJsonDumps(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  if (Array.isArray(value)) return `[${value.map(pythonJsonDumps).join(', ')}]`;
  if (typeof value === 'object') return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${pythonJsonDumps(v)}`).join(', ')}}`;
  return JSON.stringify(value);
}

export function generateSignature(a: {
  method: string;
  version: string;
  hostname: string;
  date: string;
  relUrl: string;
  contentType: string;
  accessKey: string;
  secretKey: string;
}): string {
  const bodyHash = createHash('sha256').update(Buffer.alloc(0)).digest('hex');
  const signStr = `${a.method.toUpperCase()}\n${a.relUrl}\n${a.date}\nhost:${a.hostname}\ncontent-type:${a.contentType.toLowerCase()}\nx-backendai-version:${a.version}\n${bodyHash}`;
  const day = a.date.slice(0, 10).replaceAll('-', '');
  let key = createHmac('sha256', a.secretKey).update(day).digest();
  key = createHmac('sha256', key).update(a.hostname).digest();
  const sig = createHmac('sha256', key).update(signStr).digest('hex');
  return `BackendAI signMethod=HMAC-SHA256, credential=${a.accessKey}:${sig}`;
}

export class BackendAiClient {
  apiVersion: string;
  /** Requests the client made, for assertions on what it sent. */
  readonly sent: Array<{ method: string; path: string; status: number }> = [];

  constructor(
    readonly endpoint: string,
    readonly keypair: Keypair,
    /** The client's own API version: 23.09's SDK speaks v7.20230615, the newest v9.20250722. */
    readonly clientVersion: string,
    /** Shift the signing clock (to test the skew bound). */
    readonly clockOffsetMs = 0,
  ) {
    this.apiVersion = clientVersion;
  }

  /** session.py _negotiate_api_version. */
  async negotiate(): Promise<{ version: string; manager: string }> {
    const res = await request(this.endpoint, { headers: { 'user-agent': 'Backend.AI Client for Python 23.09.10' } });
    const info = (await res.body.json()) as { version: string; manager: string };
    const server = parseApiVersion(info.version);
    const client = parseApiVersion(this.clientVersion);
    const lower = server[0] < client[0] || (server[0] === client[0] && server[1] < client[1]) ? server : client;
    this.apiVersion = `v${lower[0]}.${lower[1]}`;
    return info;
  }

  private headers(method: string, relUrl: string, contentType: string, sendContentType: boolean): Record<string, string> {
    const host = new URL(this.endpoint).host;
    const date = pythonIsoNow(new Date(Date.now() + this.clockOffsetMs));
    return {
      'user-agent': 'Backend.AI Client for Python 23.09.10',
      'x-backendai-domain': 'default',
      'x-backendai-version': this.apiVersion,
      date,
      ...(sendContentType ? { 'content-type': contentType } : {}),
      authorization: generateSignature({
        method,
        version: this.apiVersion,
        hostname: host,
        date,
        relUrl,
        contentType,
        accessKey: this.keypair.access_key,
        secretKey: this.keypair.secret_key,
      }),
    };
  }

  /** Admin._query: the status and the parsed body (the SDK raises on errors; tests look at them). */
  async query<T = Record<string, unknown>>(query: string, variables?: Record<string, unknown> | null): Promise<{ status: number; body: { data?: T | null; errors?: Array<{ message: string; extensions?: { code?: string } }> } }> {
    const body = pythonJsonDumps({ query, variables: variables && Object.keys(variables).length > 0 ? variables : {} });
    const res = await request(`${this.endpoint}/admin/gql`, { method: 'POST', headers: this.headers('POST', '/admin/gql', 'application/json', true), body });
    const text = await res.body.text();
    this.sent.push({ method: 'POST', path: '/admin/gql', status: res.statusCode });
    return { status: res.statusCode, body: text ? (JSON.parse(text) as never) : ({} as never) };
  }

  /** One signed GET of the task's event stream (BackgroundTask.listen_events → connect_events). */
  async connectEvents(taskId: string): Promise<{ status: number; body: AsyncIterable<Buffer> | undefined }> {
    const relUrl = `/events/background-task?task_id=${taskId}`;
    const res = await request(`${this.endpoint}${relUrl}`, { headers: this.headers('GET', relUrl, 'application/octet-stream', false) });
    this.sent.push({ method: 'GET', path: relUrl, status: res.statusCode });
    if (res.statusCode !== 200) {
      await res.body.dump();
      return { status: res.statusCode, body: undefined };
    }
    return { status: res.statusCode, body: res.body };
  }
}

export interface SseMessage {
  event: string;
  data: string;
  id: string | null;
  retry: number | null;
}

/** Reads lines (b"...\n") off a byte stream, as aiohttp's StreamReader.readline does; "" at the end. */
async function* lines(body: AsyncIterable<Buffer>): AsyncGenerator<string> {
  let buf = Buffer.alloc(0);
  for await (const chunk of body) {
    buf = Buffer.concat([buf, chunk]);
    let nl: number;
    while ((nl = buf.indexOf(10)) >= 0) {
      yield buf.subarray(0, nl + 1).toString('utf8');
      buf = buf.subarray(nl + 1);
    }
  }
  if (buf.length > 0) yield buf.toString('utf8');
}

/**
 * SSEResponse.fetch_events, line for line: on a closed connection it sleeps `retry` seconds and
 * reconnects unless it has seen server_close; a blank line dispatches; `retry:` sets the sleep.
 * `maxConnections` bounds what the real client would do forever (a stream without server_close).
 */
export async function* fetchEvents(
  connect: () => Promise<AsyncIterable<Buffer>>,
  opts: { maxConnections: number; sleep: (seconds: number) => Promise<void>; onConnect?: () => void },
): AsyncGenerator<SseMessage> {
  let retry = 5; // default_retry
  let serverClosed = false;
  let msgLines: string[] = [];
  let connections = 1;
  opts.onConnect?.();
  let reader = lines(await connect());
  while (true) {
    const next = await reader.next();
    if (next.done) {
      if (!serverClosed) {
        if (connections >= opts.maxConnections) throw new Error(`the stream closed ${connections} times without server_close: the real client would reconnect forever`);
        await opts.sleep(retry);
        connections++;
        opts.onConnect?.();
        reader = lines(await connect());
        continue;
      }
      break;
    }
    const line = next.value.replace(/[\r\n]+$/, '');
    if (line.startsWith(':')) continue;
    if (line === '') {
      if (msgLines.length === 0) continue;
      let event = 'message';
      let id: string | null = null;
      let evRetry: number | null = null;
      const data: string[] = [];
      for (const stored of msgLines) {
        const colon = stored.indexOf(':');
        const hdr = stored.slice(0, colon);
        const text = stored.slice(colon + 1).replace(/^ +/, '');
        if (hdr === 'data') data.push(text);
        else if (hdr === 'event') event = text;
        else if (hdr === 'id') id = text;
        else if (hdr === 'retry') evRetry = Number.parseInt(text, 10);
      }
      msgLines = [];
      if (evRetry !== null) retry = evRetry;
      yield { event, data: data.join('\n'), id, retry: evRetry };
      if (event === 'server_close') {
        serverClosed = true;
        break;
      }
    } else {
      msgLines.push(line);
    }
  }
}
