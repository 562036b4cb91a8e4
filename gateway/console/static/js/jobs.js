/**
 * The jobs page (route `jobs`): open a job by its id (someone pasted it in a chat), and the
 * recent jobs (GET /v1/jobs, newest first, only one's own with auth) filtered by operation
 * and status. The filters live in the URL query, so a filtered list can be shared and
 * survives a reload; the first page refreshes itself while nobody is reading older ones.
 */

import { STATUSES, jobPath, shortId, statusBadge, timeOf } from './job-view.js';
import { el, errorBlock, sleep, uid } from './ui.js';

const PAGE_SIZE = 25;
const REFRESH_MS = 5000;

/**
 * Draw the page and its first page of jobs; the refreshes go on until `signal` aborts
 * (not awaited).
 * @param {object} ctx the console context (app.js)
 * @param {{}} params
 * @param {AbortSignal} signal
 */
export async function render(ctx, params, signal) {
  document.title = 'Jobs · Gateway console';
  const query = new URLSearchParams(location.search);
  const filters = { op: query.get('op') ?? '', status: query.get('status') ?? '' };
  if (!STATUSES.includes(filters.status)) filters.status = '';

  // The op asked for is an option even before (or if not among) the ops listed.
  const opSelect = select('jobs-op', filters.op ? [filters.op] : [], filters.op);
  const statusSelect = select('jobs-status', STATUSES, filters.status);
  ctx.client.ops({ signal }).then((ops) => {
    const names = [...new Set([...ops.map((o) => o.op), filters.op].filter(Boolean))].sort();
    opSelect.replaceChildren(...options(names, opSelect.value));
  }, () => { /* the filter still works with the op typed in the URL; the list says any error */ });

  const auto = el('input', { type: 'checkbox', id: uid('jobs-auto'), checked: true });
  const captionId = uid('jobs-caption');
  const tbody = el('tbody');
  const scroller = el('div', { class: 'jobs-scroll', role: 'region', 'aria-labelledby': captionId, tabindex: '0', hidden: true },
    el('table', { class: 'jobs-list' },
      el('caption', { id: captionId }, 'Recent jobs, newest first'),
      el('thead', {}, el('tr', {}, ['Job', 'Operation', 'Status', 'Created', 'Updated'].map((h) => el('th', { scope: 'col' }, h)))),
      tbody));
  const empty = el('p', { class: 'jobs-empty', hidden: true });
  const errors = el('div', { class: 'jobs-errors' });
  // aria-disabled, not disabled, while it loads: a disabled button would drop the keyboard focus.
  const more = el('button', {
    type: 'button', class: 'jobs-more', hidden: true,
    onclick: () => { if (!more.hasAttribute('aria-disabled')) load({ older: true }); },
  }, 'Older jobs');

  let cursor = null; // next_cursor of the last page shown
  let paged = false; // older pages are shown: a refresh of the first would drop them
  let loading = null; // the AbortController of the request in flight
  signal.addEventListener('abort', () => loading?.abort());

  async function load({ older = false, quiet = false } = {}) {
    loading?.abort();
    const controller = new AbortController();
    loading = controller;
    const stop = controller.signal;
    scroller.setAttribute('aria-busy', 'true');
    if (older) more.setAttribute('aria-disabled', 'true');
    try {
      const page = await ctx.client.jobs({
        op: filters.op || undefined,
        status: filters.status || undefined,
        limit: PAGE_SIZE,
        cursor: older ? cursor : undefined,
        signal: stop,
      });
      const rows = page.jobs.map(row);
      if (older) tbody.append(...rows);
      else tbody.replaceChildren(...rows);
      paged = older;
      cursor = page.next_cursor ?? null;
      more.hidden = !cursor;
      errors.replaceChildren();
      const count = tbody.rows.length;
      scroller.hidden = count === 0;
      empty.hidden = count > 0;
      empty.textContent = filters.op || filters.status ? 'No jobs match these filters.' : 'No jobs yet.';
      if (older) {
        // The button goes with the last page: focus the first job it added instead.
        if (more.hidden) rows[0]?.querySelector('a')?.focus();
        ctx.announce(`${rows.length} older jobs added`);
      } else if (!quiet) {
        ctx.announce(count ? `${count} jobs${cursor ? ', and older ones' : ''}` : empty.textContent);
      }
    } catch (error) {
      if (stop.aborted) return;
      // A refresh failing every few seconds says so once, not at every try.
      if (!quiet || !errors.hasChildNodes()) errors.replaceChildren(errorBlock(error));
    } finally {
      if (loading === controller) {
        loading = null;
        scroller.removeAttribute('aria-busy');
        more.removeAttribute('aria-disabled');
      }
    }
  }

  const onFilter = () => {
    filters.op = opSelect.value;
    filters.status = statusSelect.value;
    const search = new URLSearchParams(Object.entries(filters).filter(([, value]) => value)).toString();
    history.replaceState(null, '', ctx.href(search ? `jobs?${search}` : 'jobs'));
    load();
  };
  opSelect.addEventListener('change', onFilter);
  statusSelect.addEventListener('change', onFilter);

  ctx.main.append(
    el('h1', {}, 'Jobs'),
    lookupForm(ctx),
    el('h2', {}, 'Recent jobs'),
    el('form', { class: 'jobs-filters', onsubmit: (event) => { event.preventDefault(); load(); } },
      field('Operation', opSelect),
      field('Status', statusSelect),
      el('button', { type: 'submit', class: 'jobs-refresh' }, 'Refresh'),
      el('span', { class: 'jobs-auto' }, auto, el('label', { for: auto.id }, 'Refresh every 5 s'))),
    errors, empty, scroller, more);
  await load({ quiet: true });
  refreshLoop();

  async function refreshLoop() {
    while (!signal.aborted) {
      await sleep(REFRESH_MS, signal);
      // Not under someone's keyboard (rows replaced would take their focus), nor a hidden tab.
      const busy = loading || paged || document.hidden || scroller.contains(document.activeElement);
      if (!signal.aborted && auto.checked && !busy) await load({ quiet: true });
    }
  }
}

/** "Find a job by id": the id, or a pasted link to the job's page (its last segment). */
function lookupForm(ctx) {
  const input = el('input', { id: 'job-id-lookup', type: 'text', required: true, autocomplete: 'off', spellcheck: 'false' });
  const headingId = uid('jobs-find');
  return el('form', {
    class: 'jobs-lookup',
    'aria-labelledby': headingId,
    onsubmit: (event) => {
      event.preventDefault();
      const id = input.value.trim().split(/[/?#]/).filter(Boolean).pop();
      if (id) ctx.navigate(jobPath(id));
    },
  },
  el('h2', { id: headingId }, 'Find a job by id'),
  el('label', { for: 'job-id-lookup' }, 'Job id'), input,
  el('button', { type: 'submit' }, 'Open'));
}

function field(text, control) {
  return el('span', { class: 'jobs-field' }, el('label', { for: control.id }, text), control);
}

function select(id, values, chosen) {
  return el('select', { id }, options(values, chosen));
}

/** "Any" (no filter), then `values`, `chosen` selected. */
function options(values, chosen) {
  return [['', 'Any'], ...values.map((v) => [v, v])]
    .map(([value, text]) => el('option', { value, selected: value === chosen }, text));
}

function row(job) {
  return el('tr', { dataset: { jobId: job.id, status: job.status } },
    el('th', { scope: 'row' }, el('a', { href: jobPath(job.id), 'data-nav': true, class: 'job-id' }, shortId(job.id))),
    el('td', {}, el('code', {}, job.op)),
    el('td', {}, statusBadge(job.status)),
    el('td', {}, timeOf(job.created_at)),
    el('td', {}, timeOf(job.updated_at)));
}
