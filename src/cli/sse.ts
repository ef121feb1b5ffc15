import { CliError } from './errors.js';

/**
 * A reader of text/event-stream (the WHATWG server-sent events format): `event:`, `data:` (several
 * lines joined by "\n"), `id:`, comments (":") ignored, a blank line dispatches. Works on any byte
 * stream, e.g. an undici response body, and never holds more than one event in memory.
 */

export interface SseEvent {
  /** "message" when the server named none. */
  event: string;
  data: string;
  id: string | undefined;
}

/** One event's data may not grow past this (an operation snapshot with 1000 targets is ~300 KiB). */
export const MAX_EVENT_BYTES = 16 * 1024 * 1024;

export async function* readSse(body: AsyncIterable<Uint8Array>, maxEventBytes = MAX_EVENT_BYTES): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder('utf-8');
  let buffer = '';
  let event = '';
  let data: string[] = [];
  let dataBytes = 0;
  let id: string | undefined;
  let lastId: string | undefined;
  let first = true;

  const takeLine = (line: string): SseEvent | undefined => {
    if (line === '') {
      if (data.length === 0) {
        event = '';
        return undefined;
      }
      const out: SseEvent = { event: event || 'message', data: data.join('\n'), id: id ?? lastId };
      lastId = out.id;
      event = '';
      data = [];
      dataBytes = 0;
      id = undefined;
      return out;
    }
    if (line.startsWith(':')) return undefined;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') {
      dataBytes += value.length + 1;
      if (dataBytes > maxEventBytes) throw new CliError('TOO_LARGE', `an event of the stream is larger than ${maxEventBytes} bytes`);
      data.push(value);
    } else if (field === 'id' && !value.includes('\0')) id = value;
    return undefined;
  };

  const drain = function* (final: boolean): Generator<SseEvent> {
    for (;;) {
      // Lines end with \r\n, \n or \r; a trailing \r may still be followed by \n in the next chunk.
      const m = /\r\n|\n|\r/.exec(buffer);
      if (!m) break;
      if (m[0] === '\r' && m.index === buffer.length - 1 && !final) break;
      const line = buffer.slice(0, m.index);
      buffer = buffer.slice(m.index + m[0].length);
      const ev = takeLine(line);
      if (ev) yield ev;
    }
    if (buffer.length > maxEventBytes) throw new CliError('TOO_LARGE', `a line of the event stream is longer than ${maxEventBytes} bytes`);
  };

  for await (const chunk of body) {
    let text = decoder.decode(chunk, { stream: true });
    if (first && text.length > 0) {
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      first = false;
    }
    buffer += text;
    yield* drain(false);
  }
  buffer += decoder.decode();
  yield* drain(true);
  // An event not followed by a blank line when the stream ends is dropped, as the standard says.
}
