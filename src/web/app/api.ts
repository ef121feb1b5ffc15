/**
 * The dashboard's client of the control plane: the REST API (/api/v1), GraphQL (/admin/gql) and task
 * events (SSE), all with the user's API key as the bearer. Errors become ApiError with the server's
 * stable code, so views show "FORBIDDEN: …" exactly as stowctl would.
 */

export interface User {
  name: string;
  role: 'superadmin' | 'admin' | 'user';
  domain: string | null;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** "CODE: message", as stowctl prints a refusal. */
export function describeError(err: unknown): string {
  if (err instanceof ApiError) return `${err.code}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}

export class Api {
  constructor(readonly token: string) {}

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return { authorization: `Bearer ${this.token}`, ...extra };
  }

  async rest<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
    const res = await fetch(path, {
      method,
      headers: this.headers(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    const parsed = parseJson(text);
    if (!res.ok) {
      const error = (parsed as { error?: { code?: string; message?: string } } | undefined)?.error;
      throw new ApiError(res.status, error?.code ?? `HTTP_${res.status}`, error?.message ?? (text.slice(0, 200) || res.statusText));
    }
    return parsed as T;
  }

  /** Runs a GraphQL operation; the first error (with its extensions.code) is thrown. */
  async gql<T>(query: string, variables?: Record<string, unknown>): Promise<T> {
    const res = await fetch('/admin/gql', {
      method: 'POST',
      headers: this.headers({ 'content-type': 'application/json' }),
      body: JSON.stringify({ query, ...(variables ? { variables } : {}) }),
    });
    const body = parseJson(await res.text()) as { data?: T | null; errors?: Array<{ message: string; extensions?: { code?: string } }> } | undefined;
    const first = body?.errors?.[0];
    if (first) throw new ApiError(res.status, first.extensions?.code ?? 'GRAPHQL_ERROR', first.message);
    if (!res.ok || !body?.data) throw new ApiError(res.status, `HTTP_${res.status}`, 'the GraphQL endpoint answered no data');
    return body.data;
  }

  /**
   * Follows a Server-Sent Events stream until it ends or `signal` aborts. EventSource cannot send an
   * Authorization header, so this reads the stream through fetch.
   */
  async events(path: string, onEvent: (event: string, data: string) => void, signal: AbortSignal): Promise<void> {
    const res = await fetch(path, { headers: this.headers({ accept: 'text/event-stream' }), signal });
    if (!res.ok || !res.body) {
      const error = (parseJson(await res.text()) as { error?: { code?: string; message?: string } } | undefined)?.error;
      throw new ApiError(res.status, error?.code ?? `HTTP_${res.status}`, error?.message ?? res.statusText);
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end: number;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, '');
        let event = 'message';
        const data: string[] = [];
        for (const line of block.split(/\r?\n/)) {
          if (line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'event') event = val;
          else if (field === 'data') data.push(val);
        }
        if (data.length > 0) onEvent(event, data.join('\n'));
      }
    }
  }
}

function parseJson(text: string): unknown {
  try {
    return text ? JSON.parse(text) : undefined;
  } catch {
    return undefined;
  }
}
