/**
 * Serve gateway operations from Node, speaking only the gateway's pinned AMQP wire
 * protocol (docs/workers.md), on amqplib: the JavaScript sibling of the Python kit
 * (gateway/worker.py, the reference behaviour) and the Perl one (Gateway::Worker).
 *
 *     import { Worker, JobFailed } from '@amqp-http-gateway/client/worker';
 *
 *     const worker = new Worker(process.env.GATEWAY_BROKER_URL);
 *     worker.operation('math.add', async (request, job) => ({ sum: request.a + request.b }));
 *     await worker.run(); // until SIGTERM/SIGINT, then a graceful shutdown
 *
 * A handler gets the request (parsed JSON) and a job; it returns (or resolves to) the
 * result, or throws `JobFailed(code, message, details)` for an error answer. Any other
 * exception becomes an error answer `worker_error`: a bug fails only its own job.
 *
 * Two ways to hold a request:
 * - quick (the default): the request is acked only once RabbitMQ has confirmed the answer,
 *   so a worker killed mid-job leaves it to be redelivered;
 * - `longRunning: true` (hours or days): say `started`, ack at once (RabbitMQ's consumer
 *   timeout never fires), then keep the job's lease with heartbeats; if the worker dies,
 *   the gateway fails the job `worker_lost` once the lease runs out.
 * While a handler runs, heartbeats go out every third of the lease, and `job.signal`
 * aborts on a cancel notice or at the job's deadline (the kit then sends nothing more).
 *
 * Node only: amqplib is loaded when the worker runs (it is an optional peer dependency of
 * the client), and src/index.js never imports this module, so browsers never see it.
 */

import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { defaultValidator } from './validation.js';

// The wire vocabulary (gateway/wire.py spells the same strings).
const CANCEL_EXCHANGE = 'gateway.cancel';
const HEADER_DEADLINE = 'x-deadline';
const HEADER_LEASE_SECONDS = 'x-lease-seconds';
const HEADER_ATTEMPT = 'x-attempt';

export const DEFAULT_LEASE_SECONDS = 120;
export const DEFAULT_SHUTDOWN_GRACE_MS = 30_000;
/** How many cancelled job ids to remember, to skip their requests should they come later. */
const REMEMBERED_CANCELS = 10_000;
const RECONNECT_MS = 1_000;
const MAX_RECONNECT_MS = 30_000;
/** Waiting for the gateway to declare a queue or the cancel exchange: 0.2 s, doubling, to 5 s. */
const DECLARE_RETRY_MS = 200;
const MAX_DECLARE_RETRY_MS = 5_000;
/** setTimeout fires at once beyond this (about 24.8 days): longer waits are chained. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Rejects bytes that are not UTF-8, as the Python kit's JSON parser does. */
const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true });

/** Throw from a handler to fail the job with this code and message (and details). */
export class JobFailed extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {unknown} [details]
   */
  constructor(code, message, details) {
    super(message);
    this.name = 'JobFailed';
    this.code = code;
    this.details = details;
  }

  /** The error answer's body: `{"error": {"code", "message", "details"?}}`. */
  body() {
    const error = { code: this.code, message: this.message };
    if (this.details !== undefined) error.details = this.details;
    return { error };
  }
}

/**
 * The reason `job.signal` aborts with: `code` is `cancelled` (a cancel notice), `expired`
 * (the job's deadline), `shutdown` (the worker stopped before the handler did) or
 * `connection_lost` (a quick job whose request RabbitMQ will deliver again).
 */
export class JobAborted extends Error {
  /**
   * @param {'cancelled' | 'expired' | 'shutdown' | 'connection_lost'} code
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = 'AbortError';
    this.code = code;
  }
}

// --- W3C trace context --------------------------------------------------------------------

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const ALL_ZEROS = /^0+$/;

/**
 * A W3C `traceparent` (version 00 only, lower-case hex, ids not all zeros), or null when
 * absent or invalid.
 * @param {unknown} value a header value (a string, or bytes)
 * @returns {{traceId: string, parentId: string, flags: string} | null}
 */
export function parseTraceparent(value) {
  const text = Buffer.isBuffer(value) ? value.toString('latin1') : value;
  if (typeof text !== 'string') return null;
  const match = TRACEPARENT.exec(text);
  if (!match || ALL_ZEROS.test(match[1]) || ALL_ZEROS.test(match[2])) return null;
  return { traceId: match[1], parentId: match[2], flags: match[3] };
}

/**
 * A version 00 `traceparent`.
 * @param {{traceId: string, spanId: string, flags: string}} context
 */
export function formatTraceparent({ traceId, spanId, flags }) {
  return `00-${traceId}-${spanId}-${flags}`;
}

/** A new span id: 16 random lower-case hex digits, not all zeros. */
export function newSpanId() {
  for (;;) {
    const id = randomBytes(8).toString('hex');
    if (!ALL_ZEROS.test(id)) return id;
  }
}

// --- small helpers ----------------------------------------------------------------------

/**
 * The broker user a URL logs in as (URL-decoded; `guest` when it names none): RabbitMQ
 * refuses any other as an answer's `user_id`.
 * @param {string} brokerUrl
 */
export function brokerUser(brokerUrl) {
  const first = String(brokerUrl).trim().split(/[\s,]+/)[0];
  try {
    const { username } = new URL(first);
    return username ? decodeURIComponent(username) : 'guest';
  } catch {
    return 'guest';
  }
}

/**
 * The default logger: one line per event on stderr, like the Python kit's
 * `%(asctime)s %(levelname)s %(name)s: %(message)s`; debug lines only if asked for.
 * @param {{debug?: boolean}} [options]
 */
export function consoleLogger({ debug = false } = {}) {
  const line = (level) => (message) => console.error(`${new Date().toISOString()} ${level} gateway.worker: ${message}`);
  return { debug: debug ? line('DEBUG') : () => {}, info: line('INFO'), warn: line('WARNING'), error: line('ERROR') };
}

function describe(error) {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

/** `Name: message`, and where it was thrown, on one line (stack frames are not bodies). */
function describeBug(error) {
  if (!(error instanceof Error)) return String(error);
  const frame = error.stack?.split('\n').find((l) => l.trimStart().startsWith('at '));
  return `${error.name}: ${error.message}${frame ? ` (${frame.trim()})` : ''}`;
}

function headerText(value) {
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  return typeof value === 'string' ? value : undefined;
}

function headerNumber(value) {
  const number = typeof value === 'bigint' ? Number(value) : value;
  return typeof number === 'number' && Number.isFinite(number) ? number : null;
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function pause(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** Resolves when `signal` aborts (no timer: it keeps no process alive). */
function abortedPromise(signal) {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
}

/** setTimeout for any delay (chained past MAX_TIMER_MS); returns the function that clears it. */
function longTimeout(ms, callback) {
  let timer;
  const arm = (left) => {
    timer = setTimeout(() => (left > MAX_TIMER_MS ? arm(left - MAX_TIMER_MS) : callback()), Math.min(left, MAX_TIMER_MS));
  };
  arm(Math.max(ms, 0));
  return () => clearTimeout(timer);
}

class Stopping extends Error {}

/** Ends a job (module-private: handlers cannot call it). */
const END = Symbol('end');

// --- a job, as its handler sees it -----------------------------------------------------

class Job {
  #answer;
  #progressCheck;
  #over = false;

  constructor({ id, op, headers, redelivered, trace, spanId, tracestate, signal, answer, progressCheck }) {
    this.id = id;
    this.op = op;
    this.headers = headers;
    const deadline = headerNumber(headers[HEADER_DEADLINE]);
    /** When the job expires, epoch milliseconds; null: no deadline. */
    this.deadline = deadline;
    const lease = headerNumber(headers[HEADER_LEASE_SECONDS]);
    this.leaseSeconds = lease !== null && lease > 0 ? lease : DEFAULT_LEASE_SECONDS;
    const attempt = headerNumber(headers[HEADER_ATTEMPT]);
    this.attempt = attempt !== null && attempt >= 1 ? attempt : 1;
    this.redelivered = redelivered;
    this.signal = signal;
    this.traceId = trace ? trace.traceId : null;
    this.spanId = trace ? spanId : null;
    /** Our own traceparent (our span): what to pass on to anything this job calls. */
    this.traceparent = trace ? formatTraceparent({ traceId: trace.traceId, spanId, flags: trace.flags }) : null;
    this.tracestate = trace ? tracestate ?? null : null;
    this.#answer = answer;
    this.#progressCheck = progressCheck;
  }

  /**
   * Send a progress event. With a contract, off-contract progress is not sent: this throws
   * a JobFailed `invalid_progress` (with the details) instead.
   * @param {unknown} data
   */
  async progress(data) {
    this.signal.throwIfAborted();
    if (this.#over) return;
    const body = JSON.stringify(data) ?? 'null';
    if (this.#progressCheck) {
      const details = this.#progressCheck(JSON.parse(body));
      if (details.length > 0) {
        throw new JobFailed('invalid_progress', offContract('progress', this.op, details), details);
      }
    }
    await this.#answer('progress', body);
  }

  /** Prove the worker is alive (sent for you while a handler runs). */
  async heartbeat() {
    this.signal.throwIfAborted();
    if (!this.#over) await this.#answer('heartbeat', 'null');
  }

  /** Mark the job running (long-running jobs say it for you). */
  async started() {
    this.signal.throwIfAborted();
    if (!this.#over) await this.#answer('started', 'null');
  }

  /** The job has its final answer (or none): say nothing more. */
  [END]() {
    this.#over = true;
  }
}

function offContract(what, op, details) {
  const first = details[0];
  return `the handler's ${what} does not match the contract of ${op}: ${first.message} (at ${first.path || 'the top level'})`;
}

// --- the worker ---------------------------------------------------------------------------

export class Worker {
  /**
   * @type {Array<{op: string, handler: Function, longRunning: boolean, prefetch: number,
   *   contract: unknown, checks: {result?: Function, progress?: Function}}>}
   */
  #operations = [];
  /** job id -> the running jobs with that id (a redelivered copy may run beside the first) */
  #running = new Map();
  /** job ids the gateway cancelled, oldest first (a Map keeps insertion order) */
  #cancelled = new Map();
  /** the requests being handled, for a graceful shutdown to wait for */
  #inflight = new Set();
  /** op -> its channel on the current connection: {channel, open, consumerTag} */
  #channels = new Map();
  #stop = new AbortController();
  #skipGrace = new AbortController();
  #served = null;

  /**
   * @param {string} brokerUrl `amqp://user:password@host:port/vhost`
   * @param {{prefetch?: number, gatewayUser?: string, logger?: object, shutdownGraceMs?: number}} [options]
   */
  constructor(brokerUrl, { prefetch = 8, gatewayUser, logger, shutdownGraceMs = DEFAULT_SHUTDOWN_GRACE_MS } = {}) {
    if (typeof brokerUrl !== 'string' || !brokerUrl) throw new TypeError('Worker needs a broker URL (amqp://...)');
    if (!Number.isInteger(prefetch) || prefetch < 1) throw new TypeError('prefetch must be a positive integer');
    if (!(shutdownGraceMs >= 0)) throw new TypeError('shutdownGraceMs must be a number of milliseconds >= 0');
    this.brokerUrl = brokerUrl;
    this.prefetch = prefetch;
    /** The broker user this worker logs in as: every answer's user_id (RabbitMQ checks it). */
    this.user = brokerUser(brokerUrl);
    /** Take only requests whose (RabbitMQ-checked) user_id is the gateway's; reject others unrun. */
    this.gatewayUser = gatewayUser;
    this.shutdownGraceMs = shutdownGraceMs;
    this.logger = logger ?? consoleLogger();
  }

  /**
   * Register the handler of operation `op`; up to `prefetch` of its jobs run at once.
   * @param {string} op
   * @param {(request: any, job: Job) => unknown} handler
   * @param {{longRunning?: boolean, prefetch?: number, contract?: object | string | URL}} [options]
   * @returns {this}
   */
  operation(op, handler, { longRunning = false, prefetch, contract } = {}) {
    if (typeof op !== 'string' || !op) throw new TypeError('operation needs a name');
    if (typeof handler !== 'function') throw new TypeError(`the handler of ${op} must be a function`);
    if (this.#operations.some((o) => o.op === op)) throw new Error(`operation ${op} is registered twice`);
    const ownPrefetch = prefetch ?? this.prefetch;
    if (!Number.isInteger(ownPrefetch) || ownPrefetch < 1) throw new TypeError(`the prefetch of ${op} must be a positive integer`);
    if (this.#served) throw new Error('register operations before run()');
    this.#operations.push({ op, handler, longRunning: Boolean(longRunning), prefetch: ownPrefetch, contract, checks: {} });
    return this;
  }

  /**
   * Connect, consume every registered operation, and serve until `close()` or (unless
   * `handleSignals` is false) SIGTERM/SIGINT; reconnects with a growing delay when the
   * broker goes away. Resolves once shut down.
   * @param {{handleSignals?: boolean}} [options]
   */
  run({ handleSignals = true } = {}) {
    this.#served ??= this.#serve(handleSignals);
    return this.#served;
  }

  /**
   * Shut down gracefully: stop taking requests, let running jobs finish (up to
   * `shutdownGraceMs`), then close. Quick jobs not finished by then are left unacked, so
   * RabbitMQ delivers them again. Resolves once shut down (if the worker runs).
   */
  close() {
    if (this.#stop.signal.aborted) this.#skipGrace.abort();
    this.#stop.abort();
    return this.#served ?? Promise.resolve();
  }

  #log(level, message) {
    try {
      this.logger[level]?.(message);
    } catch {
      // a broken logger must not break the worker
    }
  }

  async #serve(handleSignals) {
    if (this.#operations.length === 0) throw new Error('no operation registered');
    const amqp = await loadAmqplib();
    await this.#loadContracts();
    const onSignal = (name) => {
      this.#log('info', `${name}: shutting down${this.#stop.signal.aborted ? ' now' : ''}`);
      void this.close();
    };
    const signals = handleSignals ? ['SIGTERM', 'SIGINT'] : [];
    for (const name of signals) process.on(name, onSignal);
    try {
      await this.#connectLoop(amqp);
    } finally {
      for (const name of signals) process.off(name, onSignal);
    }
  }

  async #loadContracts() {
    const validator = this.#operations.some((o) => o.contract !== undefined) ? await defaultValidator() : null;
    for (const operation of this.#operations) {
      if (operation.contract === undefined) continue;
      const contract = typeof operation.contract === 'object' && !(operation.contract instanceof URL)
        ? operation.contract
        : JSON.parse(await readFile(operation.contract, 'utf8'));
      const definitions = contract?.definitions;
      if (!definitions?.result) throw new Error(`the contract of ${operation.op} has no definitions.result`);
      operation.checks.result = await validator(contract, 'result');
      if (definitions.progress) operation.checks.progress = await validator(contract, 'progress');
    }
  }

  async #connectLoop(amqp) {
    const stopped = this.#stop.signal;
    const names = this.#operations.map((o) => o.op).join(', ');
    let delay = RECONNECT_MS;
    while (!stopped.aborted) {
      let connection;
      try {
        connection = await amqp.connect(this.brokerUrl, {
          timeout: 10_000,
          clientProperties: { connection_name: `gateway worker (${names})` },
        });
      } catch (error) {
        this.#log('warn', `RabbitMQ unreachable (${describe(error)}); retrying in ${delay / 1000} s`);
        await pause(delay, stopped);
        delay = Math.min(delay * 2, MAX_RECONNECT_MS);
        continue;
      }
      const lost = new Promise((resolve) => connection.once('close', () => resolve('lost')));
      connection.on('error', (error) => this.#log('warn', `RabbitMQ connection error: ${describe(error)}`));
      let why;
      try {
        await this.#listenForCancels(connection, lost);
        for (const operation of this.#operations) await this.#consume(connection, operation, lost);
        // A line the test harness and people watch for.
        this.#log('info', `serving ${names}`);
        delay = RECONNECT_MS;
        this.#heartbeatLongJobs();
        const stop = new Promise((resolve) => {
          if (stopped.aborted) resolve('stop');
          stopped.addEventListener('abort', () => resolve('stop'), { once: true });
        });
        why = await Promise.race([lost, stop]);
      } catch (error) {
        why = stopped.aborted ? 'stop' : 'failed';
        if (why === 'failed') {
          this.#log('warn', `connection to RabbitMQ failed (${describe(error)}); reconnecting in ${delay / 1000} s`);
        }
      }
      if (why === 'stop') {
        await this.#shutDown(connection);
        return;
      }
      if (why === 'lost') this.#log('warn', `connection to RabbitMQ lost; reconnecting in ${delay / 1000} s`);
      await connection.close().catch(() => {});
      this.#connectionGone();
      await pause(delay, stopped);
      delay = Math.min(delay * 2, MAX_RECONNECT_MS);
    }
    await this.#shutDown(null);
  }

  /**
   * A channel on which the gateway's `declare` (a passive one) succeeds, retried on a
   * fresh channel until the gateway has declared the thing (a 404 closes the channel).
   */
  async #declaredPassively(connection, lost, { confirm, declare, what }) {
    let wait = DECLARE_RETRY_MS;
    let gone = false;
    lost.then(() => (gone = true));
    for (;;) {
      if (this.#stop.signal.aborted) throw new Stopping('stopping');
      if (gone) throw new Error('the connection closed');
      const channel = confirm ? await connection.createConfirmChannel() : await connection.createChannel();
      const state = { channel, open: true, consumerTag: null };
      channel.on('error', (error) => {
        if (!state.ready) return; // a passive declare's 404: tried again below
        // Closed by RabbitMQ alone (e.g. its consumer timeout): set everything up again.
        this.#log('warn', `the channel of ${what} was closed by RabbitMQ (${describe(error)}); reconnecting`);
        connection.close().catch(() => {});
      });
      channel.on('close', () => (state.open = false));
      try {
        await declare(channel);
        state.ready = true;
        return state;
      } catch (error) {
        if (error?.code !== 404) throw error;
        this.#log('info', `${what} not declared yet (is the gateway up?)`);
      }
      await pause(wait, this.#stop.signal);
      wait = Math.min(wait * 2, MAX_DECLARE_RETRY_MS);
    }
  }

  async #listenForCancels(connection, lost) {
    // Passively, as the operation queues: the exchange is the gateway's, and a
    // least-privilege worker user may not declare it.
    const { channel } = await this.#declaredPassively(connection, lost, {
      confirm: false,
      declare: (ch) => ch.checkExchange(CANCEL_EXCHANGE),
      what: `exchange ${CANCEL_EXCHANGE}`,
    });
    const { queue } = await channel.assertQueue('', { exclusive: true, autoDelete: true, durable: false });
    await channel.bindQueue(queue, CANCEL_EXCHANGE, '');
    await channel.consume(queue, (message) => {
      if (message) return this.#cancelNotice(message);
      this.#log('warn', 'RabbitMQ cancelled the consumer of cancel notices; reconnecting');
      connection.close().catch(() => {});
    }, { noAck: true });
  }

  /** A notice names the job in correlation_id (type `cancel`): remember it, stop its work. */
  #cancelNotice(message) {
    const { correlationId: jobId, type } = message.properties;
    if (!jobId || (type !== undefined && type !== 'cancel')) return;
    this.#cancelled.delete(jobId);
    this.#cancelled.set(jobId, true);
    if (this.#cancelled.size > REMEMBERED_CANCELS) this.#cancelled.delete(this.#cancelled.keys().next().value);
    const running = this.#running.get(jobId);
    if (!running) this.#log('debug', `job ${jobId} cancelled by the gateway (not running here)`);
    for (const one of running ?? []) {
      this.#log('info', one.about('cancelled by the gateway'));
      one.abort('cancelled', `job ${jobId} was cancelled`);
    }
  }

  async #consume(connection, operation, lost) {
    // The gateway owns the topology: declare passively, and wait until it exists.
    const state = await this.#declaredPassively(connection, lost, {
      confirm: true,
      declare: (ch) => ch.checkQueue(operation.op),
      what: `queue ${operation.op}`,
    });
    const { channel } = state;
    await channel.prefetch(operation.prefetch);
    this.#channels.set(operation.op, state);
    const { consumerTag } = await channel.consume(operation.op, (message) => {
      if (message === null) {
        // The broker cancelled the consumer (the queue was deleted): start over.
        this.#log('warn', `RabbitMQ cancelled the consumer of ${operation.op} (queue deleted?); reconnecting`);
        connection.close().catch(() => {});
        return;
      }
      const handled = this.#handle(operation, state, message).catch((error) => {
        this.#log('error', `request on ${operation.op} not handled: ${describeBug(error)}`);
      });
      this.#inflight.add(handled);
      handled.finally(() => this.#inflight.delete(handled));
    }, { noAck: false });
    state.consumerTag = consumerTag;
  }

  /** Back after a reconnection: long jobs that kept running renew their leases at once. */
  #heartbeatLongJobs() {
    for (const jobs of this.#running.values()) {
      for (const { job, operation, about } of jobs) {
        if (!operation.longRunning) continue;
        job.heartbeat().catch((error) => this.#log('warn', about(`heartbeat not sent (${describe(error)})`)));
      }
    }
  }

  /** The connection is gone: quick jobs on it can no longer be acked (they come again). */
  #connectionGone() {
    for (const jobs of this.#running.values()) {
      for (const running of jobs) {
        if (!running.operation.longRunning && !running.delivery.open) {
          running.abort('connection_lost', `the connection of job ${running.job.id} was lost; RabbitMQ delivers it again`);
        }
      }
    }
  }

  async #shutDown(connection) {
    const stopConsuming = [...this.#channels.values()].map(async (state) => {
      if (state.open && state.consumerTag) await state.channel.cancel(state.consumerTag).catch(() => {});
    });
    await Promise.all(stopConsuming);
    if (this.#inflight.size > 0) {
      const grace = this.shutdownGraceMs / 1000;
      this.#log('info', `shutting down: waiting up to ${grace} s for ${this.#inflight.size} running job(s)`);
      const graceOver = new AbortController();
      const timer = setTimeout(() => graceOver.abort(), this.shutdownGraceMs);
      const skip = () => graceOver.abort();
      this.#skipGrace.signal.addEventListener('abort', skip, { once: true });
      const allDone = (async () => {
        while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight]);
      })();
      await Promise.race([allDone, abortedPromise(graceOver.signal)]);
      clearTimeout(timer);
      this.#skipGrace.signal.removeEventListener('abort', skip);
    }
    if (this.#running.size > 0) {
      const left = this.#running.size;
      this.#log('warn', `${left} job(s) still running after the grace period; quick ones are left to be redelivered`);
      for (const jobs of this.#running.values()) {
        for (const running of jobs) running.abort('shutdown', 'the worker is shutting down');
      }
      // Let their flows see the abort (no ack for quick ones) before the connection goes.
      await Promise.allSettled([...this.#inflight]);
    }
    if (connection) {
      // Channels first: a channel's frames stay in order, so its last acks reach RabbitMQ
      // before its close (amqplib may send a connection's close ahead of other channels'
      // frames). Unacked requests go back to the queue.
      await Promise.all([...this.#channels.values()].map((state) => state.open && state.channel.close().catch(() => {})));
      await connection.close().catch(() => {});
    }
    this.#channels.clear();
    this.#log('info', 'stopped');
  }

  // --- one request ----------------------------------------------------------------------

  async #handle(operation, delivery, message) {
    const { properties, fields } = message;
    const headers = properties.headers ?? {};
    const jobId = properties.correlationId ?? '';
    const replyTo = properties.replyTo;
    const { op, longRunning } = operation;
    const ack = () => delivery.open && delivery.channel.ack(message);

    const trace = parseTraceparent(headers.traceparent);
    const spanId = trace ? newSpanId() : null;
    const tracestate = trace ? headerText(headers.tracestate) : undefined;
    // Every answer of a traced job carries our span, and the tracestate as it came.
    const traceHeaders = trace && {
      traceparent: formatTraceparent({ traceId: trace.traceId, spanId, flags: trace.flags }),
      ...(tracestate !== undefined && { tracestate }),
    };
    const traceSuffix = trace ? ` trace_id=${trace.traceId}` : '';
    const about = (text) => `job ${jobId} (${op}) ${text}${traceSuffix}`;

    if (this.gatewayUser !== undefined && properties.userId !== this.gatewayUser) {
      // Put into the queue by someone other than the gateway (no HTTP auth, no contract
      // check): not run, not answered; the gateway drops its dead letter.
      const user = JSON.stringify(properties.userId ?? null);
      this.#log('warn', `request ${jobId} on ${op} published by broker user ${user}, not the gateway's; rejected${traceSuffix}`);
      if (delivery.open) delivery.channel.nack(message, false, false);
      return;
    }

    const controller = new AbortController();
    // Long jobs answer on their operation's current channel (they outlive a reconnection);
    // quick ones on the channel their request came on, where it is acked.
    const answerOn = () => (longRunning ? this.#channels.get(op) : delivery);
    const answer = async (type, body) => {
      if (replyTo) await this.#publish(answerOn(), replyTo, jobId, type, body, traceHeaders);
    };
    const job = new Job({
      id: jobId, op, headers, redelivered: Boolean(fields.redelivered), trace, spanId, tracestate,
      signal: controller.signal, answer, progressCheck: operation.checks.progress,
    });

    if (this.#cancelled.has(jobId)) {
      this.#log('debug', about('skipped: cancelled already'));
      return ack(); // the gateway has said so
    }
    if (job.deadline !== null && job.deadline < Date.now()) {
      this.#log('debug', about('skipped: past its deadline'));
      return ack(); // the gateway expires it
    }

    const running = {
      job, operation, delivery, about,
      abort: (code, text) => controller.abort(new JobAborted(code, text)),
    };
    const jobs = this.#running.get(jobId) ?? new Set();
    jobs.add(running);
    this.#running.set(jobId, jobs);
    const started = Date.now();
    try {
      if (longRunning) {
        try {
          await job.started();
        } catch (error) {
          if (controller.signal.aborted) {
            // cancelled (or expired) before it started: done with, unrun
            const { code } = controller.signal.reason;
            if (code === 'cancelled' || code === 'expired') ack();
            return;
          }
          this.#log('warn', about(`not started: the started answer was not sent (${describe(error)}); requeueing the request`));
          if (delivery.open) delivery.channel.nack(message, false, true);
          return;
        }
        ack(); // from here on the lease, not the unacked request, guards the job
      }
      const outcome = await this.#run(operation, job, message.content, about, running.abort);
      job[END]();
      if (outcome.aborted) {
        this.#log('debug', about(`ended without an answer (${outcome.aborted})`));
        // A cancelled or expired quick job is done with; after a shutdown or a lost
        // connection its request stays unacked, for RabbitMQ to deliver again.
        if (!longRunning && (outcome.aborted === 'cancelled' || outcome.aborted === 'expired')) ack();
        return;
      }
      try {
        await answer(outcome.type, outcome.body);
      } catch (error) {
        if (longRunning) {
          this.#log('warn', about(`the ${outcome.type} answer was not sent (${describe(error)})`));
        } else {
          this.#log('warn', about(`the ${outcome.type} answer was not sent (${describe(error)}); requeueing the request`));
          if (delivery.open) delivery.channel.nack(message, false, true);
        }
        return;
      }
      this.#log('debug', about(`answered ${outcome.type} in ${Date.now() - started} ms`));
      // Only now, with the answer confirmed by RabbitMQ, is the request done with.
      if (!longRunning) ack();
    } finally {
      jobs.delete(running);
      if (jobs.size === 0 && this.#running.get(jobId) === jobs) this.#running.delete(jobId);
    }
  }

  /**
   * Run the handler: the answer to send, or `{aborted: code}` if the job was cancelled,
   * passed its deadline, or the worker stopped first. Heartbeats keep the lease meanwhile.
   */
  #run(operation, job, content, about, abort) {
    const { signal } = job;
    return new Promise((resolve) => {
      let settled = false;
      const heartbeats = setInterval(() => {
        job.heartbeat().catch((error) => {
          if (!signal.aborted) this.#log('warn', about(`heartbeat not sent (${describe(error)})`));
        });
      }, (job.leaseSeconds / 3) * 1000);
      const clearDeadline = job.deadline === null ? () => {} : longTimeout(job.deadline - Date.now(), () => {
        this.#log('warn', about('passed its deadline; the gateway expires it'));
        abort('expired', `job ${job.id} passed its deadline`);
      });
      const settle = (outcome) => {
        if (settled) return;
        settled = true;
        clearInterval(heartbeats);
        clearDeadline();
        signal.removeEventListener('abort', onAbort);
        resolve(outcome);
      };
      const onAbort = () => settle({ aborted: signal.reason?.code ?? 'cancelled' });
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });

      const work = async () => {
        let request;
        try {
          request = JSON.parse(STRICT_UTF8.decode(content));
        } catch {
          return { answer: errorAnswer(new JobFailed('invalid_request', 'the request is not JSON').body()) };
        }
        return { result: await operation.handler(request, job) };
      };
      // Once aborted, whatever the handler ends with (often the abort reason) is moot.
      work().then(
        (done) => settled || settle(done.answer ?? this.#resultAnswer(operation, done.result, about)),
        (error) => settled || settle(this.#failureAnswer(error, about)),
      );
    });
  }

  #resultAnswer(operation, result, about) {
    let body;
    try {
      body = JSON.stringify(result) ?? 'null';
    } catch (error) {
      this.#log('error', about(`failed: its result is not JSON (${describe(error)})`));
      return errorAnswer({ error: { code: 'worker_error', message: `the handler's result is not JSON: ${describe(error)}` } });
    }
    const check = operation.checks.result;
    if (check) {
      const details = check(JSON.parse(body));
      if (details.length > 0) {
        const message = offContract('result', operation.op, details);
        this.#log('warn', about(`failed invalid_result: ${message.replace(/^the handler's result /, 'its result ')}`));
        return errorAnswer(new JobFailed('invalid_result', message, details).body());
      }
    }
    return { type: 'result', body };
  }

  #failureAnswer(error, about) {
    if (error instanceof JobFailed) {
      this.#log('debug', about(`failed ${error.code}`));
      return errorAnswer(error.body());
    }
    this.#log('error', about(`failed: ${describeBug(error)}`));
    const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    return errorAnswer({ error: { code: 'worker_error', message } });
  }

  /** Publish an answer and resolve once RabbitMQ has confirmed it. */
  #publish(state, replyTo, jobId, type, body, headers) {
    return new Promise((resolve, reject) => {
      if (!state?.open) return reject(new Error('no open channel to RabbitMQ'));
      try {
        state.channel.publish('', replyTo, Buffer.from(body), {
          contentType: 'application/json',
          correlationId: jobId,
          type,
          persistent: true,
          // Our broker user, which RabbitMQ checks: a gateway run with --worker-users
          // takes answers only from its operation's workers.
          userId: this.user,
          ...(headers && { headers }),
        }, (error) => (error ? reject(error) : resolve()));
      } catch (error) {
        reject(error); // the channel closed meanwhile
      }
    });
  }
}

function errorAnswer(body) {
  return { type: 'error', body: JSON.stringify(body) };
}

/** amqplib, loaded only when a worker runs: the client's optional peer dependency. */
async function loadAmqplib() {
  try {
    const module = await import('amqplib');
    return module.default ?? module;
  } catch (cause) {
    throw new Error('the worker kit needs amqplib: npm install amqplib', { cause });
  }
}
