// Types for @amqp-http-gateway/client/worker (src/worker.js is plain JavaScript, no build
// step): the Node worker kit, which serves operations over AMQP with amqplib.

/** Where the kit's log lines go; one string per event. `console` itself fits. */
export interface WorkerLogger {
  debug?(message: string): void;
  info?(message: string): void;
  warn?(message: string): void;
  error?(message: string): void;
}

export interface WorkerOptions {
  /** How many requests of each operation RabbitMQ hands over ahead (so run at once). Default 8. */
  prefetch?: number;
  /** Take only requests published by this broker user (the gateway's); reject others unrun. */
  gatewayUser?: string;
  /** Default: `consoleLogger()`, one line per event on stderr (no debug lines). */
  logger?: WorkerLogger;
  /** How long a shutdown waits for running jobs before leaving them. Default 30 000. */
  shutdownGraceMs?: number;
}

export interface OperationOptions {
  /** The lease pattern: say `started`, ack at once, keep the lease with heartbeats. */
  longRunning?: boolean;
  /** This operation's prefetch (default: the worker's). */
  prefetch?: number;
  /**
   * The operation's contract (the document, or a path / file URL of schemas/ops/<op>.json):
   * results and progress are checked against its `result` and `progress` definitions
   * before they are sent.
   */
  contract?: object | string | URL;
}

/** What a handler knows about its job, and how it talks back. */
export interface Job {
  readonly id: string;
  readonly op: string;
  /** The request's AMQP headers, as amqplib decoded them. */
  readonly headers: Record<string, unknown>;
  /** When the job expires, epoch milliseconds; null without a deadline. */
  readonly deadline: number | null;
  /** Header `x-lease-seconds` (default 120): heartbeats go out every third of it. */
  readonly leaseSeconds: number;
  /** Header `x-attempt`: 2 when the gateway published the request again. */
  readonly attempt: number;
  /** RabbitMQ delivered this request before (to a worker that did not ack it). */
  readonly redelivered: boolean;
  /** Aborts on a cancel notice, at the deadline, or at shutdown: its reason is a JobAborted. */
  readonly signal: AbortSignal;
  /** The W3C trace id of the request's `traceparent`; null if none (or invalid). */
  readonly traceId: string | null;
  /** This job's own span id in that trace; null without a trace. */
  readonly spanId: string | null;
  /** `00-<traceId>-<spanId>-<flags>`: the traceparent to pass on to what this job calls. */
  readonly traceparent: string | null;
  /** The request's `tracestate`, unchanged; null without a trace. */
  readonly tracestate: string | null;
  /**
   * Send a progress event (resolves once RabbitMQ has confirmed it). Rejects with the abort
   * reason once the job was aborted; with a contract, off-contract progress is not sent:
   * it rejects with JobFailed `invalid_progress`.
   */
  progress(data: unknown): Promise<void>;
  /** Prove the worker is alive (sent for you every third of the lease). */
  heartbeat(): Promise<void>;
  /** Mark the job running (long-running operations do it for you). */
  started(): Promise<void>;
}

export type Handler<Request = any, Result = unknown> = (request: Request, job: Job) => Result | Promise<Result>;

/** Throw from a handler to fail the job with this error (an `error` answer). */
export class JobFailed extends Error {
  constructor(code: string, message: string, details?: unknown);
  readonly code: string;
  readonly details: unknown;
  body(): { error: { code: string; message: string; details?: unknown } };
}

/** `job.signal.reason`: why the job was aborted. */
export class JobAborted extends Error {
  constructor(code: JobAborted['code'], message: string);
  /** `cancelled` (a cancel notice), `expired` (the deadline), `shutdown`, or `connection_lost` (a quick job: it comes again). */
  readonly code: 'cancelled' | 'expired' | 'shutdown' | 'connection_lost';
}

export class Worker {
  constructor(brokerUrl: string, options?: WorkerOptions);
  readonly brokerUrl: string;
  /** The broker user of the URL: every answer's `user_id`. */
  readonly user: string;
  readonly prefetch: number;
  readonly gatewayUser: string | undefined;
  readonly shutdownGraceMs: number;
  readonly logger: WorkerLogger;
  /** Register the handler of operation `op`. Returns the worker, so calls chain. */
  operation<Request = any, Result = unknown>(op: string, handler: Handler<Request, Result>, options?: OperationOptions): this;
  /**
   * Serve until `close()` or SIGTERM/SIGINT (unless `handleSignals: false`), reconnecting
   * when the broker goes away; resolves once shut down.
   */
  run(options?: { handleSignals?: boolean }): Promise<void>;
  /** Shut down gracefully (a second call skips the grace period). */
  close(): Promise<void>;
}

export const DEFAULT_LEASE_SECONDS: number;
export const DEFAULT_SHUTDOWN_GRACE_MS: number;

/** A logger writing one line per event to stderr (`debug: true` for per-job lines too). */
export function consoleLogger(options?: { debug?: boolean }): Required<WorkerLogger>;

/** The broker user an `amqp://` URL logs in as (`guest` if it names none). */
export function brokerUser(brokerUrl: string): string;

/** A version 00 W3C traceparent, strictly; null when absent or invalid. */
export function parseTraceparent(value: unknown): { traceId: string; parentId: string; flags: string } | null;
export function formatTraceparent(context: { traceId: string; spanId: string; flags: string }): string;
/** 16 random lower-case hex digits, not all zeros. */
export function newSpanId(): string;
