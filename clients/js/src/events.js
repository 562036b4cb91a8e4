/**
 * Event streams as async iterators, over Server-Sent Events, resuming after a dropped
 * connection from the last seq seen so that every event arrives exactly once. A job's
 * events (`jobEvents`) and a topic's messages (`topicMessages`) take the same path
 * (`followStream`); they differ only in their event types, the items they yield, and how
 * they end: a job's stream after its terminal event, a topic's never by itself.
 *
 * Two transports, the same guarantees:
 * - `EventSource` (browsers): the browser reconnects by itself and sends `Last-Event-ID`.
 *   It cannot send custom headers or use an injected fetch, so it is only chosen without them.
 * - fetch + SSEParser (Node, or a browser with custom headers): this module reconnects,
 *   sending `Last-Event-ID` itself and waiting the server's `retry:` hint in between.
 * Both drop any event whose seq is not past the last one yielded, and stop a job's stream
 * after its terminal event (the gateway closes the stream there, and a bare EventSource
 * would otherwise reconnect forever). Neither retries a dead gateway forever: after
 * `reconnectTimeout` seconds without a connection they throw GatewayError `unreachable`
 * (or the gateway's last 429/5xx answer); an AbortSignal stops them at any time.
 */

import { GatewayError, TERMINAL_EVENT_TYPES, errorFromResponse } from './errors.js';
import { SSEParser, readSSE } from './sse.js';

/** The event types of a job's stream; EventSource needs a listener per type. */
const JOB_EVENT_TYPES = ['queued', 'started', 'progress', 'result', 'error', 'cancelled', 'expired'];

/** The event types of a topic's stream: one per message. */
const TOPIC_EVENT_TYPES = ['message'];

/** Reconnect delay before the server has sent a `retry:` hint (EventSource's usual default). */
const DEFAULT_RETRY_MS = 2000;

/** How long a stream keeps trying to reach a gateway it cannot connect to, by default. */
export const DEFAULT_RECONNECT_TIMEOUT_SECONDS = 60;

/** Failed reconnects back off exponentially from the `retry:` hint up to this, plus jitter. */
const MAX_BACKOFF_MS = 10_000;

/**
 * @typedef {{seq: number, type: string, data: any}} JobEvent
 * @typedef {{seq: number, topic: string, data: any}} TopicMessage
 * @typedef {import('./sse.js').SSEFrame} SSEFrame
 * @typedef {object} StreamTarget where a stream is and how to reach it
 * @property {string} url the event stream (carrying `?access_token=` if it needs one)
 * @property {string} baseUrl the gateway, for error messages
 * @property {typeof fetch} fetch
 * @property {Record<string, string>} headers
 * @property {boolean} useEventSource stream over `EventSource` (else fetch + SSEParser)
 * @property {typeof EventSource} [EventSource]
 * @typedef {object} StreamKind what differs between a job's stream and a topic's
 * @property {string[]} types the event types it carries
 * @property {string} probeUrl a plain JSON GET refused as the stream is (404, 401...):
 *   asked why a stream could not be opened
 * @property {(seq: number, frame: SSEFrame) => any} toItem what to yield for a frame
 * @property {(item: any) => boolean} isLast the item after which the stream is over
 * @property {(cursor: number | undefined, signal?: AbortSignal) => Promise<boolean>} [isOver]
 *   after the gateway closed the stream cleanly: whether that was the end (else resume)
 * @typedef {{after?: number, signal?: AbortSignal, reconnectTimeout?: number}} StreamOptions
 *   `after` undefined: from what comes next (topics)
 */

/**
 * A job's events from seq `after` (default 0) on, ending after the terminal one.
 * @param {StreamTarget & {jobUrl: string}} target `jobUrl`: the job resource
 * @param {StreamOptions} options
 * @returns {AsyncGenerator<JobEvent>}
 */
export function jobEvents(target, { after = 0, ...options } = {}) {
  return followStream({
    ...target,
    types: JOB_EVENT_TYPES,
    probeUrl: target.jobUrl,
    toItem: (seq, frame) => ({ seq, type: frame.event, data: parseData(frame.data) }),
    isLast: (event) => TERMINAL_EVENT_TYPES.has(event.type),
    isOver: (cursor, signal) => alreadyHasTheEnd(target, cursor, signal),
  }, { after, ...options });
}

/**
 * A topic's messages past seq `after` (undefined: those published from now on), for as
 * long as the caller iterates: the stream never ends by itself, and a clean close (a
 * gateway restarting) is resumed like a dropped connection.
 * @param {StreamTarget & {topic: string}} target
 * @param {StreamOptions} options
 * @returns {AsyncGenerator<TopicMessage>}
 */
export async function* topicMessages(target, { after, ...options } = {}) {
  const { topic } = target;
  // The long-poll form of the same URL answers at once: with the stream's own refusal,
  // or with where "now" is in the stream.
  const probeUrl = withParam(target.url, 'wait', 0);
  // "From now on" as a seq, so that a connection dropped before the first message
  // resumes from there, not from a later "now".
  const start = after ?? (await positionNow({ ...target, probeUrl }, options.signal));
  yield* followStream({
    ...target,
    types: TOPIC_EVENT_TYPES,
    probeUrl,
    toItem: (seq, frame) => ({ seq, topic, data: parseData(frame.data) }),
    isLast: () => false,
  }, { ...options, after: start });
}

/**
 * Where the topic's stream is now: the long-poll's `next` with no `after`. Undefined if
 * the gateway cannot say (then the stream itself starts "from now", and tells any error).
 */
async function positionNow(stream, signal) {
  try {
    const response = await stream.fetch(stream.probeUrl, {
      headers: { ...stream.headers, Accept: 'application/json' },
      signal,
      cache: 'no-store',
    });
    if (!response.ok) return undefined;
    const { next } = await response.json();
    return Number.isSafeInteger(next) && next >= 0 ? next : undefined;
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    return undefined;
  }
}

/**
 * @param {StreamTarget & StreamKind} stream
 * @param {StreamOptions} options
 */
function followStream(stream, options) {
  return stream.useEventSource ? eventSourceStream(stream, options) : fetchStream(stream, options);
}

/** `url` with `name=value` added (nothing for an undefined value). */
function withParam(url, name, value) {
  if (value === undefined) return url;
  return `${url}${url.includes('?') ? '&' : '?'}${name}=${encodeURIComponent(String(value))}`;
}

/** The shortest first wait after a failed reconnect, whatever the `retry:` hint says. */
const MIN_BACKOFF_MS = 500;

/**
 * The wait before failed reconnect number `failures` (1, 2, …): the `retry:` hint doubled
 * per failure, capped, plus up to a second of jitter so that the clients of a restarted
 * gateway do not all come back at the same instant.
 */
function backoffMs(hintMs, failures) {
  const base = Math.max(MIN_BACKOFF_MS, hintMs);
  const exponential = Math.min(MAX_BACKOFF_MS, base * 2 ** (failures - 1));
  return Math.max(base, exponential) + Math.random() * Math.min(1000, base);
}

/** The error a stream throws when it gives up: `lastError` if the gateway answered (a 5xx). */
function unreachable(target, seconds, lastError) {
  if (lastError instanceof GatewayError) return lastError;
  const reason = lastError?.cause?.code ?? lastError?.message ?? 'no connection';
  return new GatewayError({
    status: 0,
    code: 'unreachable',
    message: `cannot reach the gateway at ${target.baseUrl}: ${reason} (gave up after ${seconds.toFixed(1)} s)`,
    local: true,
    cause: lastError,
  });
}
/**
 * Over fetch: read the stream, and on a network error or a clean end before the last
 * event, reconnect from the last seq. A 4xx (unknown job or topic, refused token) ends it
 * with a GatewayError. Failed reconnects back off exponentially; after `reconnectTimeout`
 * seconds of them it gives up (see `unreachable`).
 * @param {StreamTarget & StreamKind} stream
 * @param {StreamOptions} options
 * @returns {AsyncGenerator<any>}
 */
async function* fetchStream(stream, { after, signal, reconnectTimeout = DEFAULT_RECONNECT_TIMEOUT_SECONDS } = {}) {
  let cursor = after; // the last seq yielded (undefined: none yet, and no `after`)
  let retryMs = DEFAULT_RETRY_MS;
  let failures = 0; // attempts in a row that got no stream
  let failingSince; // when the first of them started
  for (;;) {
    signal?.throwIfAborted();
    const stop = new AbortController(); // ends this connection if the consumer stops early
    const parser = new SSEParser();
    const attemptStarted = Date.now();
    let endedCleanly = false;
    let connected = false;
    let failure; // why this attempt got no stream at all
    try {
      const response = await stream.fetch(withParam(stream.url, 'after', cursor), {
        // Like EventSource: Last-Event-ID only on a resume (the gateway prefers it to ?after).
        headers: {
          ...stream.headers,
          Accept: 'text/event-stream',
          ...(cursor !== undefined && cursor !== after ? { 'Last-Event-ID': String(cursor) } : {}),
        },
        signal: anySignal([signal, stop.signal]),
        cache: 'no-store',
      });
      if (!response.ok) {
        const error = await errorFromResponse(response);
        if (!isRetryable(error)) throw error;
        retryMs = (error.retryAfter ?? retryMs / 1000) * 1000;
        failure = error;
      } else {
        connected = true;
        failures = 0;
        failingSince = undefined;
        for await (const frame of readSSE(response.body, parser)) {
          const item = toItem(stream, frame);
          if (item === null || (cursor !== undefined && item.seq <= cursor)) continue; // already yielded
          cursor = item.seq;
          yield item;
          if (stream.isLast(item)) return;
        }
        endedCleanly = true;
      }
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      if (error instanceof GatewayError && !isRetryable(error)) throw error;
      // Otherwise the connection broke (or never came up): resume below from `cursor`.
      if (!connected) failure = error;
    } finally {
      stop.abort();
    }
    if (parser.retryMs !== undefined) retryMs = parser.retryMs;
    // A block with an `id:` but no data moves the stream's position without an event
    // (EventSource resumes from it too): resume from there.
    const position = seqOf(parser.dispatchedId);
    if (position !== null && (cursor === undefined || position > cursor)) cursor = position;
    if (endedCleanly && stream.isOver && (await stream.isOver(cursor, signal))) return;
    let delay = retryMs;
    if (failure !== undefined) {
      failures += 1;
      failingSince ??= attemptStarted;
      delay = backoffMs(retryMs, failures);
      const failingFor = Date.now() + delay - failingSince;
      if (failingFor > reconnectTimeout * 1000) {
        throw unreachable(stream, (Date.now() - failingSince) / 1000, failure);
      }
    }
    await sleep(delay, signal);
  }
}

/**
 * Over EventSource: bridge its callbacks to an async iterator. The browser reconnects by
 * itself, forever: a timer started at the first connection error and cleared when a
 * connection opens bounds that to `reconnectTimeout` seconds.
 * @param {StreamTarget & StreamKind} stream
 * @param {StreamOptions} options
 * @returns {AsyncGenerator<any>}
 */
async function* eventSourceStream(stream, { after, signal, reconnectTimeout = DEFAULT_RECONNECT_TIMEOUT_SECONDS } = {}) {
  signal?.throwIfAborted();
  const queue = new AsyncQueue();
  let cursor = after;
  let source;
  let failingSince;
  let giveUpTimer;
  let failures = 0;
  const open = () => {
    // `?after` only counts on the first connect: the browser's reconnects send
    // Last-Event-ID, which the gateway prefers.
    source = new stream.EventSource(withParam(stream.url, 'after', cursor));
    source.addEventListener('open', () => {
      clearTimeout(giveUpTimer);
      failingSince = undefined;
      failures = 0;
    });
    for (const type of stream.types) {
      if (type === 'error') continue; // below: it also reports connection errors
      source.addEventListener(type, (message) => {
        queue.push({ frame: { id: message.lastEventId, event: type, data: message.data } });
      });
    }
    source.addEventListener('error', (message) => {
      // A connection error is a plain Event; an `event: error` frame a MessageEvent.
      if (!('data' in message)) onConnectionError();
      else if (stream.types.includes('error')) queue.push({ frame: { id: message.lastEventId, event: 'error', data: message.data } });
    });
  };
  const onConnectionError = () => {
    if (failingSince === undefined) {
      failingSince = Date.now();
      giveUpTimer = setTimeout(() => queue.push({ unreachable: true }), reconnectTimeout * 1000);
    }
    // CONNECTING: the browser is reconnecting by itself. CLOSED: it gave up (an HTTP error
    // status or a wrong content type): find out why, over fetch.
    if (source.readyState === 2) queue.push({ closed: true });
  };
  const onAbort = () => queue.push({ aborted: true });
  signal?.addEventListener('abort', onAbort);
  open();
  try {
    for (;;) {
      const item = await queue.next();
      if (item.aborted) throw signal.reason;
      if (item.unreachable) throw unreachable(stream, (Date.now() - failingSince) / 1000, undefined);
      if (item.closed) {
        source.close();
        await throwIfGone(stream, signal);
        failures += 1;
        const delay = backoffMs(DEFAULT_RETRY_MS, failures);
        if (Date.now() + delay - failingSince > reconnectTimeout * 1000) {
          throw unreachable(stream, (Date.now() - failingSince) / 1000, undefined);
        }
        await sleep(delay, signal);
        open();
        continue;
      }
      const event = toItem(stream, item.frame);
      if (event === null || (cursor !== undefined && event.seq <= cursor)) continue;
      cursor = event.seq;
      yield event;
      if (stream.isLast(event)) return;
    }
  } finally {
    clearTimeout(giveUpTimer);
    signal?.removeEventListener('abort', onAbort);
    source.close();
  }
}

/** A frame's seq (its id), or null if it has none. */
function seqOf(id) {
  if (typeof id !== 'string' || id === '') return null;
  const seq = Number(id);
  return Number.isSafeInteger(seq) && seq >= 0 ? seq : null;
}

/** The item a frame stands for, or null for a frame without a seq. */
function toItem(stream, frame) {
  const seq = seqOf(frame.id);
  return seq === null ? null : stream.toItem(seq, frame);
}

/** An event's data: JSON, as the gateway sends it (kept as text if it is not). */
function parseData(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** 503 (broker or capacity), 502/504 from a proxy, 429: worth reconnecting; 4xx are not. */
function isRetryable(error) {
  return error.status === 0 || error.status === 429 || error.status >= 500;
}

/**
 * The gateway closed a job's stream without a terminal event: normal only if the job
 * already ended at or before `cursor` (we asked from past its end) or was purged.
 */
async function alreadyHasTheEnd(target, cursor, signal) {
  try {
    const response = await target.fetch(target.jobUrl, { headers: target.headers, signal });
    if (response.status === 404) throw await errorFromResponse(response);
    if (!response.ok) return false;
    const job = await response.json();
    return ['succeeded', 'failed', 'cancelled', 'expired'].includes(job.status) && job.seq <= cursor;
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    if (error instanceof GatewayError) throw error;
    return false;
  }
}

/** After EventSource gave up: a 4xx for the job or topic becomes the caller's GatewayError. */
async function throwIfGone(stream, signal) {
  try {
    const response = await stream.fetch(stream.probeUrl, {
      headers: { ...stream.headers, Accept: 'application/json' },
      signal,
    });
    if (!response.ok) {
      const error = await errorFromResponse(response);
      if (!isRetryable(error)) throw error;
    }
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    if (error instanceof GatewayError) throw error;
  }
}
/** A signal that aborts when any of `signals` does (AbortSignal.any where it exists). */
export function anySignal(signals) {
  const present = signals.filter(Boolean);
  if (present.length === 1) return present[0];
  if (typeof AbortSignal.any === 'function') return AbortSignal.any(present);
  const controller = new AbortController();
  for (const s of present) {
    if (s.aborted) controller.abort(s.reason);
    else s.addEventListener('abort', () => controller.abort(s.reason), { once: true });
  }
  return controller.signal;
}

/** Wait `ms`, or reject with the signal's reason as soon as it aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** A minimal unbounded queue with an awaitable `next()`, for callback → iterator bridging. */
class AsyncQueue {
  constructor() {
    this.items = [];
    this.waiting = null;
  }

  push(item) {
    if (this.waiting) {
      const resolve = this.waiting;
      this.waiting = null;
      resolve(item);
    } else {
      this.items.push(item);
    }
  }

  next() {
    if (this.items.length > 0) return Promise.resolve(this.items.shift());
    return new Promise((resolve) => {
      this.waiting = resolve;
    });
  }
}
