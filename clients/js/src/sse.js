/**
 * A Server-Sent Events parser following the WHATWG event-stream algorithm (the one
 * `EventSource` runs), so the Node path reads streams exactly as a browser would.
 * Checked by schemas/vectors/sse-frames.json.
 */

/**
 * @typedef {object} SSEFrame
 * @property {string} id the last event id seen ("" if none)
 * @property {string} event the event type ("message" by default)
 * @property {string} data the data lines joined by "\n"
 */

/** Incremental parser: feed text chunks as they arrive, get complete events back. */
export class SSEParser {
  constructor() {
    this.pending = '';
    this.dataLines = [];
    this.eventType = '';
    /** The stream's last event id: what a reconnect sends as `Last-Event-ID`. */
    this.lastEventId = '';
    /**
     * The last event id of the last complete block (WHATWG's "last event ID string"): also
     * set by a block with an `id:` but no data, which is no event. Unlike `lastEventId`,
     * never the id of a block cut off before its end.
     */
    this.dispatchedId = '';
    /** The server's `retry:` hint in milliseconds, if it sent one. */
    this.retryMs = undefined;
  }

  /**
   * @param {string} chunk decoded text (any split, even mid-line or mid-CRLF)
   * @returns {SSEFrame[]} the events completed by this chunk
   */
  feed(chunk) {
    this.pending += chunk;
    const frames = [];
    let start = 0;
    for (;;) {
      const cut = lineEnd(this.pending, start);
      if (cut === null) break;
      const frame = this.line(this.pending.slice(start, cut.end));
      if (frame) frames.push(frame);
      start = cut.next;
    }
    this.pending = this.pending.slice(start);
    return frames;
  }

  /** @param {string} line */
  line(line) {
    if (line === '') return this.dispatch();
    if (line.startsWith(':')) return null; // a comment, such as a heartbeat
    const colon = line.indexOf(':');
    const name = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (name === 'data') this.dataLines.push(value);
    else if (name === 'event') this.eventType = value;
    else if (name === 'id' && !value.includes('\0')) this.lastEventId = value;
    else if (name === 'retry' && /^\d+$/.test(value)) this.retryMs = Number(value);
    return null;
  }

  /** A blank line ends a block: an event if it had data, else nothing. */
  dispatch() {
    this.dispatchedId = this.lastEventId;
    const data = this.dataLines;
    const event = this.eventType;
    this.dataLines = [];
    this.eventType = '';
    if (data.length === 0) return null;
    return { id: this.lastEventId, event: event || 'message', data: data.join('\n') };
  }
}

/**
 * Where the line starting at `from` ends (CR, LF or CRLF), and where the next begins;
 * null while the line is incomplete. A CR at the very end may be half a CRLF: wait.
 * @param {string} text
 * @param {number} from
 */
function lineEnd(text, from) {
  for (let i = from; i < text.length; i++) {
    const char = text.charCodeAt(i);
    if (char === 10) return { end: i, next: i + 1 };
    if (char === 13) {
      if (i + 1 === text.length) return null;
      return { end: i, next: text.charCodeAt(i + 1) === 10 ? i + 2 : i + 1 };
    }
  }
  return null;
}

/**
 * Parse a whole event-stream body; an unterminated last block is dropped, as the spec says.
 * @param {string} stream
 * @returns {SSEFrame[]}
 */
export function parseSSE(stream) {
  return new SSEParser().feed(stream);
}

/**
 * Read an event-stream response body (a WHATWG ReadableStream of bytes) as frames.
 * @param {ReadableStream<Uint8Array>} body
 * @param {SSEParser} parser kept by the caller, which needs `lastEventId` and `retryMs`
 * @returns {AsyncGenerator<SSEFrame>}
 */
export async function* readSSE(body, parser) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      yield* parser.feed(value);
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
