/**
 * JavaScript client of the AMQP HTTP gateway, for browsers (as a plain ES module, no build
 * step) and Node 20+. Everything goes through `fetch`, injectable for tests and proxies.
 *
 *   const gateway = new GatewayClient({ baseUrl: 'http://127.0.0.1:8000' });
 *   const { sum } = await gateway.call('math.add', { a: 2, b: 3 });
 *   await gateway.publish('chat.room.42', { from: 'ann', text: 'hi' });
 *   for await (const { seq, data } of gateway.subscribe('chat.room.42', { after: 0 })) …
 */

import { GatewayError, JobFailedError, TERMINAL_STATUSES, errorFromResponse } from './errors.js';
import { DEFAULT_RECONNECT_TIMEOUT_SECONDS, jobEvents, topicMessages } from './events.js';
import { assertValid, defaultValidator } from './validation.js';

export { GatewayError, JobFailedError, TERMINAL_STATUSES, TERMINAL_EVENT_TYPES } from './errors.js';
export { SSEParser, parseSSE } from './sse.js';
export { ajvValidator } from './validation.js';

/**
 * The longest single long-poll: under the gateway's default `--max-wait` (60 s) and under
 * the idle timeouts of common proxies, so a poll rarely dies of old age.
 */
const LONGEST_POLL_SECONDS = 30;

export class GatewayClient {
  /**
   * @param {object} [options]
   * @param {string} [options.baseUrl] the gateway's root URL; in a browser it defaults to
   *   the page's origin
   * @param {typeof fetch} [options.fetch] used for every request (default: globalThis.fetch)
   * @param {boolean} [options.validate] check requests (and published messages) against the
   *   contract before sending
   * @param {import('./validation.js').Validator | (() => Promise<import('./validation.js').Validator>)} [options.validator]
   *   how to validate (default: Ajv, see validation.js)
   * @param {Record<string, string>} [options.headers] sent with every request (e.g. Authorization)
   * @param {'auto' | 'eventsource' | 'fetch'} [options.transport] how `events()` and
   *   `subscribe()` stream
   * @param {typeof EventSource} [options.EventSource] the EventSource class (default: the global)
   * @param {number} [options.reconnectTimeout] seconds `events()` and `subscribe()` keep
   *   trying to reach a gateway they cannot connect to before they throw GatewayError
   *   `unreachable` (default 60)
   */
  constructor(options = {}) {
    const baseUrl = options.baseUrl ?? globalThis.location?.origin;
    if (!baseUrl) throw new TypeError('GatewayClient needs a baseUrl outside a browser page');
    this.baseUrl = String(baseUrl).replace(/\/+$/, '');
    this.customFetch = options.fetch !== undefined;
    // Wrapped, never stored bare: a browser's fetch called as a method of another object
    // throws "Illegal invocation".
    const fetchImpl = options.fetch;
    this.fetch = fetchImpl ? (url, init) => fetchImpl(url, init) : (url, init) => globalThis.fetch(url, init);
    this.validate = options.validate ?? false;
    this.validator = options.validator;
    this.headers = { ...(options.headers ?? {}) };
    this.transport = options.transport ?? 'auto';
    this.EventSource = options.EventSource ?? globalThis.EventSource;
    this.reconnectTimeout = options.reconnectTimeout ?? DEFAULT_RECONNECT_TIMEOUT_SECONDS;
    /** @type {Map<string, Promise<object>>} contracts by op, fetched once */
    this.contracts = new Map();
    /** @type {Map<string, Promise<import('./validation.js').DefinitionCheck>>} */
    this.requestChecks = new Map();
    /** @type {Map<string, Promise<object>>} topic contracts by topic, fetched once */
    this.topicContracts = new Map();
    /** @type {Map<string, Promise<import('./validation.js').DefinitionCheck>>} */
    this.messageChecks = new Map();
    /** @type {Map<string, string>} job id → the job token to read it with (`?access_token=`) */
    this.jobTokens = new Map();
  }

  /** The operations the gateway serves: `[{op, description, href, settings}]`. */
  async ops({ signal } = {}) {
    const body = await this.request('GET', '/v1/ops', { signal });
    return body.ops;
  }

  /** An operation's contract (draft-07 JSON Schema with `definitions.request`, …); cached. */
  contract(op, { signal } = {}) {
    return cached(this.contracts, op, () => this.request('GET', `/v1/ops/${encodeURIComponent(op)}`, { signal }));
  }

  /**
   * An operation's live figures (needs the scope to submit to it), at most a second old:
   * `{op, queue: {name, messages, consumers} | null, queue_error?, window_seconds, accepted,
   * finished, outcomes, accepted_per_minute, finished_per_minute, queue_wait_seconds,
   * run_seconds, sampled, complete}`. `queue` is null (and `queue_error` says why) when
   * RabbitMQ did not answer in time; the timings are `{p50, p90, max}` seconds, or null.
   * @param {string} op
   * @param {{signal?: AbortSignal}} [options]
   */
  opStats(op, { signal } = {}) {
    return this.request('GET', `/v1/ops/${encodeURIComponent(op)}/stats`, { signal });
  }

  /**
   * Who this client is to the gateway: `{auth, subject, token, scopes}` — `auth` whether
   * auth is on, `subject` null with it off, `token` 'job' | 'topic' | null, `scopes` sorted.
   * @param {{signal?: AbortSignal}} [options]
   */
  me({ signal } = {}) {
    return this.request('GET', '/v1/me', { signal });
  }

  /**
   * Submit a job. Without `wait` the answer is the job as accepted (queued); with it, the
   * job as it is when it finished or `wait` seconds passed.
   * @param {string} op
   * @param {unknown} body
   * `prefer: true` asks for the wait with a `Prefer: wait=N` header (RFC 7240) instead of
   * `?wait=N`; the gateway treats them alike.
   * @param {{wait?: number, prefer?: boolean, idempotencyKey?: string, deadlineSeconds?: number, signal?: AbortSignal}} [options]
   */
  async submit(op, body, { wait, prefer = false, idempotencyKey, deadlineSeconds, signal } = {}) {
    if (this.validate) await this.checkRequest(op, body, signal);
    const headers = { 'Content-Type': 'application/json' };
    if (idempotencyKey !== undefined) headers['Idempotency-Key'] = idempotencyKey;
    if (deadlineSeconds !== undefined) headers['X-Deadline-Seconds'] = String(deadlineSeconds);
    if (prefer && wait !== undefined) headers.Prefer = `wait=${wait}`;
    return this.request('POST', `/v1/ops/${encodeURIComponent(op)}`, {
      query: { wait: prefer ? undefined : wait },
      headers,
      body: JSON.stringify(body),
      signal,
    }).then((job) => this.remember(job));
  }

  /**
   * Run an operation and return its result: submit with `?wait=`, then long-poll the job
   * until it ends. Throws JobFailedError if it fails, is cancelled or expires, and a
   * GatewayError with code `timeout` (carrying `job`) after `timeout` seconds.
   *
   * `onProgress(progress, job)` is called whenever a poll sees newer progress; polls may
   * coalesce several progress events into the latest — use `events()` to see every one.
   * @param {string} op
   * @param {unknown} body
   * @param {{timeout?: number, signal?: AbortSignal, onProgress?: (progress: any, job: object) => void,
   *          idempotencyKey?: string, deadlineSeconds?: number}} [options]
   */
  async call(op, body, { timeout, signal, onProgress, idempotencyKey, deadlineSeconds } = {}) {
    const giveUpAt = timeout === undefined ? Infinity : Date.now() + timeout * 1000;
    const secondsLeft = () => Math.max(0, (giveUpAt - Date.now()) / 1000);
    // With onProgress, don't sit on the submit: progress only shows between polls.
    const firstWait = onProgress ? 0 : Math.min(secondsLeft(), LONGEST_POLL_SECONDS);
    let job = await this.submit(op, body, { wait: firstWait, idempotencyKey, deadlineSeconds, signal });
    let progressSeq = -1;
    const report = () => {
      if (onProgress && job.progress !== undefined && job.seq !== progressSeq && !TERMINAL_STATUSES.has(job.status)) {
        progressSeq = job.seq;
        onProgress(job.progress, job);
      }
    };
    report();
    while (!TERMINAL_STATUSES.has(job.status)) {
      if (secondsLeft() <= 0) {
        throw new GatewayError({
          status: 0,
          code: 'timeout',
          message: `${op} job ${job.id} did not finish within ${timeout} s (it is ${job.status})`,
          local: true,
          job,
        });
      }
      const wait = Math.min(secondsLeft(), LONGEST_POLL_SECONDS);
      job = await this.job(job.id, { wait, after: job.seq, signal });
      report();
    }
    if (job.status !== 'succeeded') throw new JobFailedError(job);
    return job.result;
  }

  /**
   * The job; with `wait`, held until it ends (or, with `after`, until it has an event past
   * seq `after`) or `wait` seconds pass.
   * @param {string} id
   * `jobToken`: read it with that token (`?access_token=`), here and in later calls.
   * @param {{wait?: number, after?: number, signal?: AbortSignal, jobToken?: string}} [options]
   */
  job(id, { wait, after, signal, jobToken } = {}) {
    if (jobToken !== undefined) this.jobTokens.set(id, jobToken);
    const query = { wait, after, access_token: this.jobTokens.get(id) };
    return this.request('GET', `/v1/jobs/${encodeURIComponent(id)}`, { query, signal }).then((job) => this.remember(job));
  }

  /**
   * The caller's jobs (everyone's with auth off), newest first, a page at a time:
   * `{jobs, next_cursor}`; pass `next_cursor` back as `cursor` for the next page (null: no
   * more). `op` and `status` narrow the list; `limit` is the page size.
   * @param {{op?: string, status?: string, limit?: number, cursor?: string, signal?: AbortSignal}} [options]
   * @returns {Promise<{jobs: object[], next_cursor: string | null}>}
   */
  jobs({ op, status, limit, cursor, signal } = {}) {
    return this.request('GET', '/v1/jobs', { query: { op, status, limit, cursor }, signal });
  }

  /**
   * Keep the `job_token` of a job resource for the job's later reads (`?access_token=`,
   * what EventSource needs), unless this client has an Authorization header of its own.
   * `job(id, {jobToken})` and `events(id, {jobToken})` hand one in explicitly.
   * @param {any} job
   */
  remember(job) {
    const bearer = Object.keys(this.headers).some((name) => name.toLowerCase() === 'authorization');
    if (!bearer && typeof job?.job_token === 'string') this.jobTokens.set(job.id, job.job_token);
    return job;
  }

  /** Cancel a job; throws GatewayError `job_finished` (409) if it had already ended. */
  cancel(id, { signal } = {}) {
    return this.request('DELETE', `/v1/jobs/${encodeURIComponent(id)}`, { signal });
  }

  /**
   * The job's events from seq `after` on, as they happen, ending after the terminal one
   * (`result`, `error`, `cancelled` or `expired`). Survives dropped connections: it resumes
   * from the last seq seen, so each event comes exactly once. Reconnects back off
   * exponentially (with jitter); after `reconnectTimeout` seconds (default: the client's)
   * without reaching the gateway it throws GatewayError `unreachable` (status 0), or the
   * gateway's last 429/5xx GatewayError. `signal` stops it at any time.
   * @param {string} id
   * `jobToken`: follow the job with that token (`?access_token=`, see `remember`).
   * @param {{after?: number, signal?: AbortSignal, reconnectTimeout?: number, jobToken?: string}} [options]
   * @returns {AsyncGenerator<{seq: number, type: string, data: any}>}
   */
  events(id, { after = 0, signal, reconnectTimeout = this.reconnectTimeout, jobToken } = {}) {
    if (jobToken !== undefined) this.jobTokens.set(id, jobToken);
    const path = `/v1/jobs/${encodeURIComponent(id)}`;
    const query = accessQuery(this.jobTokens.get(id));
    const target = { ...this.streamTarget(`${path}/events${query}`), jobUrl: `${this.baseUrl}${path}${query}` };
    return jobEvents(target, { after, signal, reconnectTimeout });
  }

  /** Where a stream is, and how this client reaches it (EventSource or fetch). */
  streamTarget(pathAndQuery) {
    return {
      url: `${this.baseUrl}${pathAndQuery}`,
      baseUrl: this.baseUrl,
      fetch: this.fetch,
      headers: this.headers,
      useEventSource: this.usesEventSource(),
      EventSource: this.EventSource,
    };
  }

  // --- topics ------------------------------------------------------------------------

  /** The topic contracts the gateway serves: `[{name, description, href, events, settings}]`. */
  async topics({ signal } = {}) {
    const body = await this.request('GET', '/v1/topics', { signal });
    return body.topics;
  }

  /**
   * The contract that applies to `topic` (a contract name, or a key below one such as
   * `chat.room.42`): draft-07 JSON Schema with `definitions.message`; cached per topic.
   */
  topicContract(topic, { signal } = {}) {
    return cached(this.topicContracts, topic, () => this.request('GET', `/v1/topics/${encodeURIComponent(topic)}`, { signal }));
  }

  /**
   * Publish a message (any JSON value) to `topic` → `{topic, message_id}`, once RabbitMQ
   * has it. With `validate` (default: the client's), it is checked against the topic's
   * contract first and a bad one throws GatewayError `invalid_request` (422, `local`)
   * without being sent.
   * @param {string} topic
   * @param {unknown} message
   * @param {{validate?: boolean, signal?: AbortSignal}} [options]
   * @returns {Promise<{topic: string, message_id: string}>}
   */
  async publish(topic, message, { validate = this.validate, signal } = {}) {
    if (validate) await this.checkMessage(topic, message, signal);
    return this.request('POST', `/v1/topics/${encodeURIComponent(topic)}`, {
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(message),
      signal,
    });
  }

  /**
   * The messages of `topic` as they are published, for as long as the caller iterates
   * (`break`, or `signal`). A contract name (`chat.room`) gives every key of the family, a
   * key (`chat.room.42`) that key only. `after`: start past that seq (0: every retained
   * message); without it, from the next message published. Survives dropped connections
   * like `events()`: it resumes from the last seq seen (Last-Event-ID), so each message
   * comes exactly once, in order. `token`: a subscribe token from `topicToken()`, sent as
   * `?access_token=` (what EventSource needs). `validate`: check each message against the
   * topic's contract, throwing GatewayError `invalid_message` (with `seq`) at one that
   * breaks it.
   * @param {string} topic
   * @param {{after?: number, signal?: AbortSignal, reconnectTimeout?: number, token?: string, validate?: boolean}} [options]
   * @returns {AsyncGenerator<{seq: number, topic: string, data: any}>}
   */
  subscribe(topic, { after, signal, reconnectTimeout = this.reconnectTimeout, token, validate = false } = {}) {
    const target = { ...this.streamTarget(`/v1/topics/${encodeURIComponent(topic)}/events${accessQuery(token)}`), topic };
    const messages = topicMessages(target, { after, signal, reconnectTimeout });
    return validate ? this.checkedMessages(topic, messages, signal) : messages;
  }

  /**
   * A subscribe token for `topic` (needs the subscribe scope for it): read-only, that topic's
   * events only, for a few minutes → `{token, topic, expires_at, events}` (`events`: the
   * stream's path with `?access_token=`). Hand it to a page: `subscribe(topic, {token})`.
   * @param {string} topic
   * @param {{signal?: AbortSignal}} [options]
   */
  topicToken(topic, { signal } = {}) {
    return this.request('POST', `/v1/topics/${encodeURIComponent(topic)}/tokens`, { signal });
  }

  /** `messages`, each checked against the topic's contract. */
  async *checkedMessages(topic, messages, signal) {
    for await (const message of messages) {
      const details = (await this.messageCheck(topic, signal))(message.data);
      if (details.length > 0) {
        const error = new GatewayError({
          status: 0,
          code: 'invalid_message',
          message: `message ${message.seq} of topic ${topic} does not match its contract: ${details[0].message} (at ${details[0].path || 'the top level'})`,
          details,
          local: true,
        });
        error.seq = message.seq;
        throw error;
      }
      yield message;
    }
  }

  /** EventSource can't send headers or go through an injected fetch: use it only without. */
  usesEventSource() {
    if (this.transport === 'fetch') return false;
    if (this.transport === 'eventsource') return true;
    return typeof this.EventSource === 'function' && !this.customFetch && Object.keys(this.headers).length === 0;
  }

  /** Validate `body` against the op's request definition, throwing the gateway's 422 shape. */
  async checkRequest(op, body, signal) {
    const check = await cached(this.requestChecks, op, () => this.compile(this.contract(op, { signal }), 'request'));
    assertValid(check, body, `request does not match the contract of ${op}`);
  }

  /** Validate a message for `topic` against its contract, throwing the gateway's 422 shape. */
  async checkMessage(topic, message, signal) {
    assertValid(await this.messageCheck(topic, signal), message, `message does not match the contract of topic ${topic}`);
  }

  /** The check of `definitions.message` of the topic's contract; built once per topic. */
  messageCheck(topic, signal) {
    return cached(this.messageChecks, topic, () => this.compile(this.topicContract(topic, { signal }), 'message'));
  }

  /** A definition of a contract (being fetched), compiled with this client's validator. */
  async compile(loading, definition) {
    const contract = await loading;
    const validator = this.validator ?? (await defaultValidator());
    return validator(contract, definition);
  }

  /**
   * One request; the parsed JSON body, or a GatewayError from the error body.
   * @param {string} method
   * @param {string} path
   * @param {{query?: Record<string, unknown>, headers?: Record<string, string>, body?: string, signal?: AbortSignal}} [init]
   */
  async request(method, path, { query = {}, headers = {}, body, signal } = {}) {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(query)) {
      if (value !== undefined && value !== null) params.set(name, String(value));
    }
    const search = params.toString() ? `?${params}` : '';
    const response = await this.fetch(`${this.baseUrl}${path}${search}`, {
      method,
      headers: { Accept: 'application/json', ...this.headers, ...headers },
      body,
      signal,
    });
    if (!response.ok) throw await errorFromResponse(response);
    return response.json();
  }
}

/** `map.get(key)`, made by `load()` if missing; a failure is not cached. */
function cached(map, key, load) {
  if (!map.has(key)) {
    const loading = load();
    loading.catch(() => map.delete(key));
    map.set(key, loading);
  }
  return map.get(key);
}

/** The query that carries a job or subscribe token, if any. */
function accessQuery(token) {
  return token === undefined ? '' : `?access_token=${encodeURIComponent(token)}`;
}
