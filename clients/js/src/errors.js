/**
 * The two errors a client sees: the gateway (or the client on its behalf) refused or could
 * not do something, or a job ended without a result.
 */

/** Statuses after which a job never changes again. */
export const TERMINAL_STATUSES = new Set(['succeeded', 'failed', 'cancelled', 'expired']);

/** Event types that end a job's event log (the stream closes after one of them). */
export const TERMINAL_EVENT_TYPES = new Set(['result', 'error', 'cancelled', 'expired']);

/**
 * The gateway answered with its JSON error body `{"error": {"code", "message", "details"?}}`,
 * or the client produced the same shape itself (`local: true`: validation before sending,
 * a `call` timeout), so callers handle both alike.
 */
export class GatewayError extends Error {
  /**
   * @param {object} fields
   * @param {number} fields.status HTTP status (422 for local validation, 0 for a client
   *   timeout or an unreachable gateway)
   * @param {string} fields.code machine-readable code, e.g. `invalid_request`, `job_not_found`,
   *   `timeout`, `unreachable`
   * @param {string} fields.message
   * @param {Array<{path: string, message: string}>} [fields.details] JSON-pointer details
   * @param {number} [fields.retryAfter] seconds, from `Retry-After` (503s)
   * @param {boolean} [fields.local] produced by the client without (or after) a request
   * @param {object} [fields.job] the job concerned, when there is one
   * @param {unknown} [fields.cause] the error behind a local one (e.g. `unreachable`)
   */
  constructor({ status, code, message, details, retryAfter, local = false, job, cause }) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'GatewayError';
    this.status = status;
    this.code = code;
    this.details = details ?? [];
    this.retryAfter = retryAfter;
    this.local = local;
    if (job !== undefined) this.job = job;
  }
}

/**
 * A job ended `failed`, `cancelled` or `expired`. `code` is the job's error code when the
 * worker or gateway gave one, else the status itself, so `switch (err.code)` always works.
 */
export class JobFailedError extends Error {
  /** @param {object} job the finished job resource */
  constructor(job) {
    const reason = job.error?.message ?? `job ${job.status}`;
    super(`${job.op} job ${job.id} ${job.status}: ${reason}`);
    this.name = 'JobFailedError';
    this.job = job;
    this.status = job.status;
    this.code = job.error?.code ?? job.status;
  }
}

/**
 * Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date).
 * @param {string | null} header
 * @returns {number | undefined}
 */
export function parseRetryAfter(header) {
  if (header == null || header.trim() === '') return undefined;
  if (/^\d+$/.test(header.trim())) return Number(header.trim());
  const when = Date.parse(header);
  return Number.isNaN(when) ? undefined : Math.max(0, Math.ceil((when - Date.now()) / 1000));
}

/**
 * The GatewayError for a non-2xx response. Tolerates bodies that are not the gateway's
 * (a proxy's HTML 502), because those reach clients too.
 * @param {Response} response
 * @returns {Promise<GatewayError>}
 */
export async function errorFromResponse(response) {
  const retryAfter = parseRetryAfter(response.headers.get('retry-after'));
  let body;
  try {
    body = await response.json();
  } catch {
    body = undefined;
  }
  const error = body && typeof body.error === 'object' && body.error !== null ? body.error : {};
  return new GatewayError({
    status: response.status,
    code: typeof error.code === 'string' ? error.code : `http_${response.status}`,
    message: typeof error.message === 'string'
      ? error.message
      : `HTTP ${response.status} ${response.statusText}`.trim(),
    details: Array.isArray(error.details) ? error.details : [],
    retryAfter,
  });
}
