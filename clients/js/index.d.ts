// Types for @amqp-http-gateway/client (src/index.js is plain JavaScript, no build step).

export type JobStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled' | 'expired';
export type EventType = 'queued' | 'started' | 'progress' | 'result' | 'error' | 'cancelled' | 'expired';

export interface ErrorBody {
  code: string;
  message: string;
  details?: ValidationDetail[];
}

/** `path` is a JSON pointer into the request ("" = the whole body). */
export interface ValidationDetail {
  path: string;
  message: string;
}

export interface Job<Result = unknown, Progress = unknown> {
  id: string;
  op: string;
  status: JobStatus;
  /** Number of the job's latest event: the cursor for `after`. */
  seq: number;
  created_at: string;
  updated_at: string;
  result?: Result;
  error?: ErrorBody;
  progress?: Progress;
  deadline?: string;
}

export interface JobEvent<Data = unknown> {
  seq: number;
  type: EventType | string;
  data: Data;
}

/** One message of a topic, as `subscribe()` yields it. */
export interface TopicMessage<Data = unknown> {
  /** The message's position in the topic's stream: strictly increasing, not contiguous. */
  seq: number;
  /** The topic subscribed to (a family subscription does not tell the key it was published to). */
  topic: string;
  data: Data;
}

/** A topic contract, as `GET /v1/topics` lists it. */
export interface Topic {
  name: string;
  description: string;
  href: string;
  /** The path of its event stream. */
  events: string;
  settings: { description: string; max_age: string | number; max_bytes: number };
}

/** A draft-07 JSON Schema with `definitions.message`: the schema of every message of the family. */
export interface TopicContract {
  $schema?: string;
  definitions: { message: object; [name: string]: object | undefined };
  'x-gateway'?: { description?: string; max_age?: string | number; max_bytes?: number };
  [keyword: string]: unknown;
}

/** A subscribe token: read-only, one topic's events, until `expires_at` (epoch seconds). */
export interface TopicToken {
  token: string;
  topic: string;
  expires_at: number;
  /** The stream's path with `?access_token=<token>`. */
  events: string;
}

export interface PublishOptions {
  /** Check the message against the topic's contract first (default: the client's `validate`). */
  validate?: boolean;
  signal?: AbortSignal;
}

export interface SubscribeOptions {
  /** Start past this seq (0: every retained message); default: from the next message published. */
  after?: number;
  /** Stops the subscription (and any reconnect wait) at once. */
  signal?: AbortSignal;
  /** Overrides the client's `reconnectTimeout` for this subscription. */
  reconnectTimeout?: number;
  /** A subscribe token (`topicToken()`), sent as `?access_token=`. */
  token?: string;
  /** Check each message against the topic's contract; throws GatewayError `invalid_message` at one that breaks it. */
  validate?: boolean;
}

export interface Operation {
  op: string;
  description: string;
  href: string;
  settings: Record<string, unknown>;
}

/** A draft-07 JSON Schema with `definitions.request`, `definitions.result`, optional `definitions.progress`. */
export interface Contract {
  $schema?: string;
  definitions: { request: object; result: object; progress?: object; [name: string]: object | undefined };
  'x-gateway'?: Record<string, unknown>;
  [keyword: string]: unknown;
}

/** `{p50, p90, max}` in seconds (nearest rank, to the millisecond). */
export interface Percentiles {
  p50: number;
  p90: number;
  max: number;
}

/** An operation's live figures (`GET /v1/ops/{op}/stats`), at most a second old. */
export interface OpStats {
  op: string;
  /** RabbitMQ's passive declare of the queue; null when it did not answer in time or has no such queue. */
  queue: { name: string; messages: number; consumers: number } | null;
  /** Why `queue` is null. */
  queue_error?: string;
  /** The span the figures cover: 300, or less when the sample hit its limit (`complete` false). */
  window_seconds: number;
  /** Jobs created within the window. */
  accepted: number;
  /** Jobs that ended within the window. */
  finished: number;
  outcomes: { succeeded: number; failed: number; cancelled: number; expired: number };
  accepted_per_minute: number;
  finished_per_minute: number;
  /** First answer minus creation; null when no job was answered in the window. */
  queue_wait_seconds: Percentiles | null;
  /** End minus first answer, of succeeded and failed jobs; null when none. */
  run_seconds: Percentiles | null;
  /** How many jobs the figures come from. */
  sampled: number;
  /** False when the sample hit its limit: the figures are then of the latest jobs. */
  complete: boolean;
}

/** Who the caller is to the gateway (`GET /v1/me`). */
export interface Me {
  /** Whether auth is on. */
  auth: boolean;
  /** As job owners record it (`key:<subject>`, `jwt:<len(iss)>:<iss>:<sub>`); null with auth off. */
  subject: string | null;
  /** Sorted. */
  scopes: string[];
}

export interface JobsOptions {
  op?: string;
  status?: JobStatus;
  /** Page size. */
  limit?: number;
  /** `next_cursor` of the page before. */
  cursor?: string;
  signal?: AbortSignal;
}

/** A page of the caller's jobs (everyone's with auth off), newest first. */
export interface JobsPage {
  jobs: Job[];
  /** Pass as `cursor` for the next page; null when there is none. */
  next_cursor: string | null;
}

export type DefinitionCheck = (data: unknown) => ValidationDetail[];
/** Compiles `#/definitions/<definition>` of `schema` (the whole schema without one). */
export type Validator = (schema: object, definition?: string) => DefinitionCheck | Promise<DefinitionCheck>;

export interface GatewayClientOptions {
  /** The gateway's root URL; in a browser page it defaults to the page's origin. */
  baseUrl?: string;
  /** Used for every request; default globalThis.fetch. A custom fetch makes events() use fetch, not EventSource. */
  fetch?: typeof fetch;
  /** Check requests (and published messages) against their contract before sending (default false). */
  validate?: boolean;
  /** How to validate; default Ajv (window.ajv7 from ajv-dist, else `import('ajv')`). */
  validator?: Validator;
  /** Sent with every request (e.g. Authorization). Headers make events() use fetch, not EventSource. */
  headers?: Record<string, string>;
  /** How events() and subscribe() stream: 'auto' (EventSource when possible), 'eventsource' or 'fetch'. */
  transport?: 'auto' | 'eventsource' | 'fetch';
  /** The EventSource class to use (default: the global one, if any). */
  EventSource?: typeof EventSource;
  /**
   * Seconds events() and subscribe() keep trying to reach a gateway it cannot connect to (backing off
   * exponentially, with jitter) before it throws GatewayError `unreachable`; default 60.
   */
  reconnectTimeout?: number;
}

export interface EventsOptions {
  /** Start past this seq (default 0: every event). */
  after?: number;
  /** Stops the stream (and any reconnect wait) at once. */
  signal?: AbortSignal;
  /** Overrides the client's `reconnectTimeout` for this stream. */
  reconnectTimeout?: number;
  /** A job token (`job_token` of the job resource) to follow the job with, as `?access_token=`. */
  jobToken?: string;
}

export interface SubmitOptions {
  /** Seconds to hold the request for the job to finish (`?wait=`). */
  wait?: number;
  /** Send `wait` as a `Prefer: wait=N` header (RFC 7240) instead of `?wait=`. */
  prefer?: boolean;
  idempotencyKey?: string;
  deadlineSeconds?: number;
  signal?: AbortSignal;
}

export interface CallOptions<Progress = unknown> {
  /** Seconds before giving up with GatewayError `timeout` (the job goes on). */
  timeout?: number;
  signal?: AbortSignal;
  /** Called with the latest progress each time a poll sees newer progress. */
  onProgress?: (progress: Progress, job: Job<unknown, Progress>) => void;
  idempotencyKey?: string;
  deadlineSeconds?: number;
}

export class GatewayClient {
  constructor(options?: GatewayClientOptions);
  readonly baseUrl: string;
  readonly reconnectTimeout: number;
  ops(options?: { signal?: AbortSignal }): Promise<Operation[]>;
  contract(op: string, options?: { signal?: AbortSignal }): Promise<Contract>;
  /** Needs the scope to submit to the operation (403 otherwise); 404 `unknown_op`. */
  opStats(op: string, options?: { signal?: AbortSignal }): Promise<OpStats>;
  me(options?: { signal?: AbortSignal }): Promise<Me>;
  jobs(options?: JobsOptions): Promise<JobsPage>;
  submit<Result = unknown>(op: string, body: unknown, options?: SubmitOptions): Promise<Job<Result>>;
  call<Result = unknown, Progress = unknown>(op: string, body: unknown, options?: CallOptions<Progress>): Promise<Result>;
  job<Result = unknown>(id: string, options?: { wait?: number; after?: number; signal?: AbortSignal; jobToken?: string }): Promise<Job<Result>>;
  /** Throws GatewayError `job_finished` (409) if the job had already ended otherwise. */
  cancel(id: string, options?: { signal?: AbortSignal }): Promise<Job>;
  /**
   * Resumes dropped streams by Last-Event-ID; throws GatewayError `unreachable` (status 0)
   * after `reconnectTimeout` seconds without reaching the gateway.
   */
  events(id: string, options?: EventsOptions): AsyncGenerator<JobEvent, void, undefined>;
  /** The topic contracts the gateway serves. */
  topics(options?: { signal?: AbortSignal }): Promise<Topic[]>;
  /** The contract that applies to a topic (a contract name or a key below one); cached. */
  topicContract(topic: string, options?: { signal?: AbortSignal }): Promise<TopicContract>;
  /** Resolves once RabbitMQ has the message; GatewayError 422 `invalid_request` (local with `validate`), 404 `unknown_topic`. */
  publish(topic: string, message: unknown, options?: PublishOptions): Promise<{ topic: string; message_id: string }>;
  /**
   * The topic's messages as they come, never ending by itself (break or abort it). Resumes
   * dropped streams by Last-Event-ID, each message once and in order; throws GatewayError
   * `unreachable` after `reconnectTimeout` seconds without reaching the gateway.
   */
  subscribe<Data = unknown>(topic: string, options?: SubscribeOptions): AsyncGenerator<TopicMessage<Data>, void, undefined>;
  /** Needs the subscribe scope for the topic. */
  topicToken(topic: string, options?: { signal?: AbortSignal }): Promise<TopicToken>;
}

export class GatewayError extends Error {
  name: 'GatewayError';
  /** HTTP status; 422 for local validation, 0 for a `call` timeout, an unreachable gateway or `invalid_message`. */
  status: number;
  code: string;
  details: ValidationDetail[];
  /** Seconds, from Retry-After. */
  retryAfter?: number;
  /** Produced by the client (validation, timeout) rather than received. */
  local: boolean;
  job?: Job;
  /** The seq of the message that broke its contract (`invalid_message`, subscribe with validate). */
  seq?: number;
}

export class JobFailedError extends Error {
  name: 'JobFailedError';
  job: Job;
  status: 'failed' | 'cancelled' | 'expired';
  /** The job's error code, else its status. */
  code: string;
}

export interface SSEFrame {
  id: string;
  event: string;
  data: string;
}

/** WHATWG event-stream parser: feed chunks, get complete events. */
export class SSEParser {
  lastEventId: string;
  /** The last event id of the last complete block, also of one with no data (no event). */
  dispatchedId: string;
  retryMs?: number;
  feed(chunk: string): SSEFrame[];
}

/** Parse a whole event-stream body (an unterminated last block is dropped). */
export function parseSSE(stream: string): SSEFrame[];

/** A Validator built on an Ajv 8 class (draft-07). */
export function ajvValidator(Ajv: unknown): Validator;

export const TERMINAL_STATUSES: ReadonlySet<JobStatus>;
export const TERMINAL_EVENT_TYPES: ReadonlySet<EventType>;
