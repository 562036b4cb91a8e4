/**
 * One job, live: its status, progress, result or error, a Cancel button and every event it
 * went through. Shared by the job's own page (job.js) and any page that submits a job, so
 * a job looks and behaves the same wherever it is shown. It never polls: the job's event
 * stream (GET /v1/jobs/{id}/events) replays the past, then is live, and ends after the
 * terminal event; the client resumes it across dropped connections.
 */

import { jsonTree } from './tree.js';
import { el, errorBlock, uid, when } from './ui.js';

/** The six statuses, in the order a job goes through them (the last four are terminal). */
export const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled', 'expired'];
const TERMINAL = new Set(STATUSES.slice(2));

/** The status after each event type (as gateway/jobs.py applies them). */
const STATUS_AFTER = {
  queued: 'queued', started: 'running', progress: 'running', result: 'succeeded',
  error: 'failed', cancelled: 'cancelled', expired: 'expired',
};

/** What the outcome of an unsuccessful job is headed. */
const ENDING = { failed: 'Error', cancelled: 'Cancelled', expired: 'Expired' };

/** Progress is said at most this often: a job reporting ten times a second must not drown a screen reader. */
const PROGRESS_SAY_MS = 5000;

/** Event data whose JSON is at most this long is shown inline; longer, as a collapsed tree. */
const INLINE_DATA_CHARS = 80;

/**
 * A job's status as a badge: the word itself (so it is never told by colour alone), with
 * `data-status` for styles and tests.
 * @param {string} status
 * @returns {HTMLElement}
 */
export function statusBadge(status) {
  return el('span', { class: 'job-status', dataset: { status } }, status);
}

/**
 * The start of a job id, enough to tell jobs apart at a glance.
 * @param {string} id
 */
export function shortId(id) {
  return id.length > 12 ? `${id.slice(0, 8)}…` : id;
}

/**
 * The console path of a job's own page (relative: the page's <base> says where /console/ is).
 * @param {string} id
 */
export function jobPath(id) {
  return `jobs/${encodeURIComponent(id)}`;
}

/**
 * An ISO time as a <time> people read, or a dash when there is none.
 * @param {string | null | undefined} iso
 * @returns {HTMLElement}
 */
export function timeOf(iso) {
  return iso ? el('time', { datetime: iso }, when(iso)) : el('span', {}, '—');
}

/**
 * Show a job live in `container`: status (announced on each change), a progress bar when the progress
 * has numeric `done` and `total` (else the raw progress as a tree), the result as a tree, or the error
 * with its code (and details), a Cancel button while it has not ended, and the full event timeline
 * (from /v1/jobs/{id}/events), followed live until the job ends or `signal` aborts.
 * @param {HTMLElement} container
 * @param {object} ctx the console context
 * @param {object} job a job resource, or `{ id }` alone (then it is fetched)
 * @param {AbortSignal} signal
 * @returns {Promise<void>} once the job has ended (and is shown so) or signal aborted
 */
export async function showJob(container, ctx, job, signal) {
  const { id } = job;
  let state = job;
  if (job.status === undefined) {
    try {
      state = await ctx.client.job(id, { signal });
    } catch (error) {
      if (!signal.aborted) container.append(problem(error));
      return;
    }
  }
  state = { ...state };
  // Events up to the resource's seq are the past: they fill the timeline but are neither
  // applied (the resource is already past them) nor said.
  const knownSeq = state.seq ?? 0;
  const say = announcer(ctx, signal);
  const badge = statusBadge(state.status);
  const updated = el('span');
  const progress = progressView();
  const outcome = el('div', { class: 'job-outcome', tabindex: '-1' });
  const note = el('p', { class: 'job-note' });
  const cancelButton = el('button', { type: 'button', class: 'job-cancel', onclick: () => cancel() }, 'Cancel');
  const streamBox = el('div', { class: 'job-stream' });
  const eventsHeading = uid('job-events');
  const timeline = el('ol', { class: 'job-timeline', 'aria-labelledby': eventsHeading });
  const onItsPage = new URL(jobPath(id), document.baseURI).pathname === location.pathname;
  const heading = subheading(container);
  container.append(el('div', { class: 'job', dataset: { jobId: id } },
    el('dl', { class: 'job-meta' },
      pair('Status', badge),
      pair('Operation', el('code', {}, state.op)),
      pair('Id', el('code', { class: 'job-id' }, id)),
      pair('Created', timeOf(state.created_at)),
      pair('Updated', updated),
      state.deadline && pair('Deadline', timeOf(state.deadline))),
    !onItsPage && el('p', { class: 'job-link' }, el('a', { href: jobPath(id), 'data-nav': true }, 'This job’s own page (a link to share)')),
    progress.box,
    outcome,
    el('div', { class: 'job-actions' }, cancelButton, note),
    streamBox,
    el(heading, { id: eventsHeading }, 'Events'),
    timeline));

  let cancelAsked = false;
  const render = () => {
    badge.dataset.status = state.status;
    badge.textContent = state.status;
    updated.replaceChildren(timeOf(state.updated_at));
    progress.update(state.progress);
    if (!TERMINAL.has(state.status)) return;
    if (!outcome.hasChildNodes()) outcome.append(outcomeView(state, heading));
    // Focus would be lost with the button it was on: take it to what the job came to.
    const lost = document.activeElement === cancelButton || (cancelAsked && document.activeElement === document.body);
    cancelButton.remove();
    if (note.textContent === 'Cancelling…') note.textContent = '';
    if (lost) outcome.focus();
  };
  render();

  async function cancel() {
    cancelAsked = true;
    cancelButton.disabled = true;
    note.textContent = 'Cancelling…';
    try {
      await ctx.client.cancel(id, { signal });
      // The stream's `cancelled` event updates the view (and removes the button).
    } catch (error) {
      if (signal.aborted) return;
      if (error?.code === 'job_finished') {
        note.textContent = 'It had already finished.';
        ctx.announce('The job had already finished');
      } else {
        note.replaceChildren(errorBlock(error));
        cancelButton.disabled = false;
        if (document.activeElement === document.body) cancelButton.focus(); // disabling lost it
      }
    }
  }

  let pastTimes = null; // seq → time of the events before knownSeq, read once when needed
  const onEvent = (event) => {
    const time = el('span', { class: 'job-event-time' }, timeOf(event.time));
    timeline.append(eventItem(event, time));
    if (event.seq <= knownSeq) {
      // The stream does not carry times: the first event's is the job's creation, the rest
      // of the past's come from the JSON form of the log.
      if (event.seq === 1 && !event.time) time.replaceChildren(timeOf(state.created_at));
      else if (!event.time) {
        pastTimes ??= readTimes(ctx, id, knownSeq, signal);
        pastTimes.then((times) => time.replaceChildren(timeOf(times.get(event.seq))));
      }
      return;
    }
    const at = event.time ?? new Date().toISOString(); // live: it happened just now
    if (!event.time) time.replaceChildren(timeOf(at));
    const before = state.status;
    state.seq = event.seq;
    state.updated_at = at;
    state.status = STATUS_AFTER[event.type] ?? state.status;
    if (event.type === 'progress') state.progress = event.data;
    else if (event.type === 'result') state.result = event.data;
    else if (TERMINAL.has(state.status)) state.error = event.data;
    render();
    const count = counted(state.progress);
    let text = `Job ${state.status}`;
    if (state.status === 'running' && count) text += `, ${count.done} of ${count.total}`;
    else if (state.status === 'failed' && state.error?.code) text += `: ${state.error.code}`;
    say(text, { throttled: state.status === before });
  };

  let last = 0;
  for (;;) {
    try {
      for await (const event of ctx.client.events(id, { after: last, signal })) {
        last = event.seq;
        onEvent(event);
      }
      return; // it ended after the terminal event
    } catch (error) {
      if (signal.aborted) return;
      streamBox.replaceChildren(problem(error));
      // A refusal (401, 403, 404) stays one; a gateway that was away may be back.
      if (!(error?.status === 0 || error?.status === 429 || error?.status >= 500)) return;
      const again = el('button', { type: 'button' }, 'Follow again');
      streamBox.append(again);
      if (!(await clicked(again, signal))) return;
      streamBox.replaceChildren();
    }
  }
}

/** The heading tag one level below the heading the view sits under (h2 under a page's h1). */
function subheading(container) {
  for (let node = container; node && node !== document.body; node = node.parentElement) {
    for (let before = node.previousElementSibling; before; before = before.previousElementSibling) {
      const level = /^H([1-6])$/.exec(before.tagName)?.[1];
      if (level) return `h${Math.min(6, Number(level) + 1)}`;
    }
  }
  return 'h2';
}

function pair(term, value) {
  return el('div', {}, el('dt', {}, term), el('dd', {}, value));
}

/** Why a job cannot be shown: a missing one plainly, anything else as the gateway said it. */
function problem(error) {
  if (error?.status === 404) return el('p', { class: 'job-missing' }, 'No job with this id (or it is not yours).');
  return errorBlock(error);
}

/** `{done, total}` of a progress that counts (numbers, total above 0), else null. */
function counted(progress) {
  const done = progress?.done;
  const total = progress?.total;
  return Number.isFinite(done) && Number.isFinite(total) && total > 0 ? { done, total } : null;
}

/**
 * Say `text` now, or with `throttled` (progress) no sooner than PROGRESS_SAY_MS after the
 * last thing said: only the latest of those waiting is said.
 */
function announcer(ctx, signal) {
  let lastSaid = 0;
  let timer;
  signal.addEventListener('abort', () => clearTimeout(timer));
  return (text, { throttled = false } = {}) => {
    clearTimeout(timer);
    const say = () => { lastSaid = Date.now(); ctx.announce(text); };
    const wait = throttled ? lastSaid + PROGRESS_SAY_MS - Date.now() : 0;
    if (wait <= 0) say();
    else timer = setTimeout(say, wait);
  };
}

/** The progress: a bar with "done of total" when it counts, else the value as a tree. */
function progressView() {
  const box = el('div', { class: 'job-progress-box', hidden: true });
  const barId = uid('job-progress');
  const bar = el('progress', { class: 'job-progress', id: barId });
  const text = el('span', { class: 'job-progress-text' });
  const message = el('span', { class: 'job-progress-message' });
  const meter = el('div', { class: 'job-progress-counted' }, el('label', { for: barId }, 'Progress'), bar, text, message);
  return {
    box,
    update(progress) {
      box.hidden = progress === undefined || progress === null;
      if (box.hidden) return;
      const count = counted(progress);
      if (!count) {
        box.replaceChildren(el('p', { class: 'job-progress-label' }, 'Progress'), jsonTree(progress, { label: 'Progress' }));
        return;
      }
      bar.max = count.total;
      bar.value = Math.min(count.done, count.total);
      text.textContent = `${count.done} of ${count.total}`;
      bar.setAttribute('aria-valuetext', text.textContent);
      message.textContent = typeof progress.message === 'string' ? progress.message : '';
      if (box.firstChild !== meter) box.replaceChildren(meter);
    },
  };
}

/** The end of a job: its result, or its error with the code and any details. */
function outcomeView(job, heading) {
  if (job.status === 'succeeded') {
    return el('div', { class: 'job-result' }, el(heading, {}, 'Result'), jsonTree(job.result, { label: 'Result' }));
  }
  const error = job.error && typeof job.error === 'object' ? job.error : {};
  const details = error.details;
  const listed = Array.isArray(details) && details.every((d) => d && typeof d.message === 'string');
  return el('div', { class: 'job-error', dataset: { status: job.status } },
    el(heading, {}, ENDING[job.status]),
    el('p', {},
      el('code', { class: 'job-error-code' }, error.code ?? job.status),
      ': ', error.message ?? `the job ${job.status}`),
    listed && el('ul', { class: 'details' },
      details.map((d) => el('li', {}, el('code', {}, d.path || '(body)'), ' ', d.message))),
    !listed && details !== undefined && jsonTree(details, { label: 'Error details' }));
}

/** One event of the timeline: its seq, type, time and data (short inline, long as a tree). */
function eventItem({ seq, type, data }, time) {
  let shown = null;
  if (data !== null && data !== undefined) {
    const json = JSON.stringify(data);
    shown = json.length <= INLINE_DATA_CHARS
      ? el('code', { class: 'job-event-data' }, json)
      : jsonTree(data, { label: `Data of event ${seq}`, open: 0 });
  }
  return el('li', { dataset: { seq, type } },
    el('span', { class: 'job-event-seq' }, `#${seq}`),
    el('span', { class: 'job-event-type' }, type),
    time,
    shown);
}

/**
 * The times of a job's events up to `upTo`, from the long-poll JSON form of its log
 * (`{events: [{seq, time, …}], next}`), page by page. A nicety: on any failure, those known.
 */
async function readTimes(ctx, id, upTo, signal) {
  const times = new Map();
  let after = 0;
  try {
    while (after < upTo) {
      const page = await ctx.client.request('GET', `/v1/jobs/${encodeURIComponent(id)}/events`, { query: { after }, signal });
      for (const event of page.events) times.set(event.seq, event.time);
      if (page.events.length === 0 || page.next <= after) break;
      after = page.next;
    }
  } catch {
    // Without the log, the past's times stay a dash.
  }
  return times;
}

/** Resolves true when `button` is clicked, false if `signal` aborts first. */
function clicked(button, signal) {
  return new Promise((resolve) => {
    const stop = () => resolve(false);
    signal.addEventListener('abort', stop, { once: true });
    button.addEventListener('click', () => {
      signal.removeEventListener('abort', stop);
      resolve(true);
    }, { once: true });
  });
}
