/**
 * The operations page (route ''): the first thing people see, so it answers "what can I
 * call, and is it healthy?" — every operation with its settings and its live figures
 * (GET /v1/ops/{op}/stats): queue depth, workers online, throughput, waits and run times,
 * refreshed in place every few seconds.
 */

import { duration, el, errorBlock, round, sleep } from './ui.js';

const REFRESH_MS = 3000;
const MAX_BACKOFF_MS = 30000;

/** The figure columns: class `op-<name>` on each cell (tests and styles use them). */
const FIGURES = [
  ['messages', 'Queued'],
  ['consumers', 'Workers'],
  ['accepted', 'Accepted /min'],
  ['finished', 'Finished /min'],
  ['wait', 'Queue wait p50 / p90'],
  ['run', 'Run time p50 / p90'],
];

/**
 * Draw the table, then keep its figures fresh until `signal` aborts (not awaited: the
 * page counts as shown once the table is there).
 * @param {object} ctx the console context (app.js)
 * @param {{}} params
 * @param {AbortSignal} signal
 */
export async function render(ctx, params, signal) {
  document.title = 'Operations · Gateway console';
  ctx.main.append(el('h1', {}, 'Operations'));
  const ops = await ctx.client.ops({ signal });
  if (ops.length === 0) {
    ctx.main.append(el('p', {}, 'The gateway serves no operations: it has no contracts.'));
    return;
  }
  const caption = el('caption', {}, 'Each operation, its settings, and its figures.');
  const updated = el('div', { class: 'hint' });
  const rows = ops.map((op) => row(op));
  ctx.main.append(
    el('p', {}, 'Choose an operation to call it.'),
    el('table', { class: 'ops' },
      caption,
      el('thead', {}, el('tr', {},
        el('th', { scope: 'col' }, 'Operation'),
        FIGURES.map(([, label]) => el('th', { scope: 'col' }, label)))),
      el('tbody', {}, rows.map((r) => r.element))),
    updated);
  if (typeof ctx.client.opStats !== 'function') {
    updated.textContent = 'Live figures are not available from this version of the client.';
    return;
  }
  follow(ctx, rows, caption, updated, signal);
}

/** One operation's row; `cells` are its figure cells by name. */
function row(op) {
  const cells = Object.fromEntries(FIGURES.map(([name, label]) => [name, el('td', {
    class: `op-${name}`, 'data-label': label,
  }, '…')]));
  const s = op.settings ?? {};
  const settings = [s.durability ?? 'durable', s.deadline_seconds ? `deadline ${duration(s.deadline_seconds)}` : 'no deadline',
    `lease ${duration(s.lease_seconds)}`];
  const element = el('tr', { 'data-op': op.op },
    el('th', { scope: 'row' },
      el('a', { href: `ops/${encodeURIComponent(op.op)}`, 'data-nav': true }, op.op),
      op.description && el('span', { class: 'desc' }, op.description),
      el('span', { class: 'settings' }, settings.join(' · '))),
    Object.values(cells));
  return { op: op.op, element, cells };
}

/**
 * Refresh every row, one round at a time (the next starts REFRESH_MS after the last ends,
 * so a slow gateway never gets a pile of requests), backing off while rounds fail.
 */
async function follow(ctx, rows, caption, updated, signal) {
  let delay = REFRESH_MS;
  let problem = null; // the error shown, redrawn (and so alerted) only when it changes
  while (!signal.aborted) {
    const answers = await Promise.allSettled(rows.map((r) => ctx.client.opStats(r.op, { signal })));
    if (signal.aborted) return;
    const failures = [];
    answers.forEach((answer, i) => {
      if (answer.status === 'fulfilled') show(rows[i].cells, answer.value);
      else if (answer.reason?.status === 403) blank(rows[i].cells, 'no scope');
      else { blank(rows[i].cells, 'unknown'); failures.push(answer.reason); }
    });
    const seconds = answers.find((a) => a.status === 'fulfilled')?.value.window_seconds;
    if (seconds) {
      caption.textContent = `Each operation, its settings, and its figures over the last ${duration(seconds)}: `
        + 'jobs waiting in its queue, workers online, jobs accepted and finished per minute, and how long '
        + 'jobs waited in the queue and ran (median / 90th percentile).';
    }
    if (failures.length === rows.length) {
      delay = Math.min(delay * 2, MAX_BACKOFF_MS);
      if (failures[0]?.message !== problem) {
        problem = failures[0]?.message;
        updated.replaceChildren('Could not refresh the figures; trying again, less and less often.',
          errorBlock(failures[0]));
      }
    } else {
      delay = REFRESH_MS;
      problem = null;
      updated.textContent = `Updated at ${new Date().toLocaleTimeString()}; refreshed every ${REFRESH_MS / 1000} s.`;
    }
    await sleep(delay, signal);
    // A hidden tab needs no figures: wait until it is seen again.
    while (document.hidden && !signal.aborted) await sleep(1000, signal);
  }
}

/** Fill a row's cells from the figures of GET /v1/ops/{op}/stats. */
function show(cells, stats) {
  const queue = stats.queue;
  cells.messages.replaceChildren(queue ? String(queue.messages) : 'unknown');
  cells.messages.title = stats.queue_error ?? '';
  const workers = queue?.consumers;
  cells.consumers.replaceChildren(workers === 0
    ? el('strong', { class: 'warn' }, 'no worker online')
    : workers === undefined ? '—' : `${workers} online`);
  // A sample shorter than the window asked for says so: its rates are over less time.
  const span = stats.complete === false && el('small', {}, ` (last ${duration(stats.window_seconds)})`);
  cells.accepted.replaceChildren(round(stats.accepted_per_minute), span || '');
  const o = stats.outcomes ?? {};
  const bad = ['failed', 'cancelled', 'expired'].filter((k) => o[k] > 0).map((k) => `${o[k]} ${k}`);
  cells.finished.replaceChildren(round(stats.finished_per_minute),
    bad.length > 0 ? el('small', {}, ` (${bad.join(', ')})`) : '');
  cells.wait.replaceChildren(percentiles(stats.queue_wait_seconds));
  cells.run.replaceChildren(percentiles(stats.run_seconds));
}

function blank(cells, why) {
  for (const [name, cell] of Object.entries(cells)) cell.replaceChildren(name === 'messages' ? why : '—');
}

function percentiles(p) {
  return p ? `${duration(p.p50)} / ${duration(p.p90)}` : '—';
}
