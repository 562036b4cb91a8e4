/**
 * A job's events as an async iterator, over Server-Sent Events, resuming after a dropped
 * connection from the last seq seen so that every event arrives exactly once.
 *
 * Two transports, the same guarantees:
 * - `EventSource` (browsers): the browser reconnects by itself and sends `Last-Event-ID`.
 *   It cannot send custom headers or use an injected fetch, so it is only chosen without them.
 * - fetch + SSEParser (Node, or a browser with custom headers): this module reconnects,
 *   sending `Last-Event-ID` itself and waiting the server's `retry:` hint in between.
 * Both drop any event whose seq is not past the last one yielded, and stop after the
 * terminal event (the gateway closes the stream there, and a bare EventSource would
 * otherwise reconnect forever). Neither retries a dead gateway forever: after
 * `reconnectTimeout` seconds without a connection they throw GatewayError `unreachable`
 * (or the gateway's last 429/5xx answer); an AbortSignal stops them at any time.
 */

import { GatewayError, TERMINAL_EVENT_TYPES, errorFromResponse } from './errors.js';
import { SSEParser, readSSE } from './sse.js';

/** The event types the gateway sends; EventSource needs a listener per type. */
const EVENT_TYPES = ['queued', 'started', 'progress', 'result', 'error', 'cancelled', 'expired'];

/** Reconnect delay before the server has sent a `retry:` hint (EventSource's usual default). */
const DEFAULT_RETRY_MS = 2000;

/** How long events() keeps trying to reach a gateway it cannot connect to, by default. */
export const DEFAULT_RECONNECT_TIMEOUT_SECONDS = 60;

/** Failed reconnects back off exponentially from the `retry:` hint up to this, plus jitter. */
const MAX_BACKOFF_MS = 10_000;

/**
 * @typedef {{seq: number, type: string, data: any}} JobEvent
 * @typedef {{url: string, fetch: typeof fetch, headers: Record<string, string>, jobUrl: string, baseUrl: string}} StreamTarget
 * @typedef {{after?: number, signal?: AbortSignal, reconnectTimeout?: number}} StreamOptions
 */

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

/** The error events() throws when it gives up: `lastError` if the gateway answered (a 5xx). */
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
 * Over fetch: read the stream, and on a network error or a clean end before the terminal
 * event, reconnect from the last seq. A 4xx (unknown job) ends it with a GatewayError.
 * Failed reconnects back off exponentially; after `reconnectTimeout` seconds of them it
 * gives up (see `unreachable`).
 * @param {StreamTarget} target
 * @param {StreamOptions} options
 * @returns {AsyncGenerator<JobEvent>}
 */
export async function* fetchEvents(target, { after = 0, signal, reconnectTimeout = DEFAULT_RECONNECT_TIMEOUT_SECONDS } = {}) {
  let cursor = after;
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
      const response = await target.fetch(`${target.url}${target.url.includes('?') ? '&' : '?'}after=${cursor}`, {
        // Like EventSource: Last-Event-ID only on a resume (the gateway prefers it to ?after).
        headers: {
          ...target.headers,
          Accept: 'text/event-stream',
          ...(cursor > after ? { 'Last-Event-ID': String(cursor) } : {}),
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
          const event = toJobEvent(frame);
          if (event === null || event.seq <= cursor) continue; // already yielded
          cursor = event.seq;
          yield event;
          if (TERMINAL_EVENT_TYPES.has(event.type)) return;
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
    if (endedCleanly && (await alreadyHasTheEnd(target, cursor, signal))) return;
    let delay = retryMs;
    if (failure !== undefined) {
      failures += 1;
      failingSince ??= attemptStarted;
      delay = backoffMs(retryMs, failures);
      const failingFor = Date.now() + delay - failingSince;
      if (failingFor > reconnectTimeout * 1000) {
        throw unreachable(target, (Date.now() - failingSince) / 1000, failure);
      }
    }
    await sleep(delay, signal);
  }
}

/**
 * Over EventSource: bridge its callbacks to an async iterator. The browser reconnects by
 * itself, forever: a timer started at the first connection error and cleared when a
 * connection opens bounds that to `reconnectTimeout` seconds.
 * @param {StreamTarget & {EventSource: typeof EventSource}} target
 * @param {StreamOptions} options
 * @returns {AsyncGenerator<JobEvent>}
 */
export async function* eventSourceEvents(target, { after = 0, signal, reconnectTimeout = DEFAULT_RECONNECT_TIMEOUT_SECONDS } = {}) {
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
    source = new target.EventSource(`${target.url}${target.url.includes('?') ? '&' : '?'}after=${cursor}`);
    source.addEventListener('open', () => {
      clearTimeout(giveUpTimer);
      failingSince = undefined;
      failures = 0;
    });
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (message) => {
        if (type === 'error' && !('data' in message)) onConnectionError();
        else queue.push({ frame: { id: message.lastEventId, event: type, data: message.data } });
      });
    }
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
      if (item.unreachable) throw unreachable(target, (Date.now() - failingSince) / 1000, undefined);
      if (item.closed) {
        source.close();
        await throwIfGone(target, signal);
        failures += 1;
        const delay = backoffMs(DEFAULT_RETRY_MS, failures);
        if (Date.now() + delay - failingSince > reconnectTimeout * 1000) {
          throw unreachable(target, (Date.now() - failingSince) / 1000, undefined);
        }
        await sleep(delay, signal);
        open();
        continue;
      }
      const event = toJobEvent(item.frame);
      if (event === null || event.seq <= cursor) continue;
      cursor = event.seq;
      yield event;
      if (TERMINAL_EVENT_TYPES.has(event.type)) return;
    }
  } finally {
    clearTimeout(giveUpTimer);
    signal?.removeEventListener('abort', onAbort);
    source.close();
  }
}

/** @param {{id: string, event: string, data: string}} frame */
function toJobEvent(frame) {
  const seq = Number(frame.id);
  if (!Number.isSafeInteger(seq) || frame.id === '') return null;
  let data;
  try {
    data = JSON.parse(frame.data);
  } catch {
    data = frame.data;
  }
  return { seq, type: frame.event, data };
}

/** 503 (broker or capacity), 502/504 from a proxy, 429: worth reconnecting; 4xx are not. */
function isRetryable(error) {
  return error.status === 0 || error.status === 429 || error.status >= 500;
}

/**
 * The gateway closed the stream without a terminal event: normal only if the job already
 * ended at or before `cursor` (we asked from past its end) or was purged.
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

/** After EventSource gave up: a 4xx for the job becomes the caller's GatewayError. */
async function throwIfGone(target, signal) {
  try {
    const response = await target.fetch(target.jobUrl, { headers: target.headers, signal });
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
