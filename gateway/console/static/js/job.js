/**
 * A job's own page (route `jobs/<id>`): the link people share ("look at this job"), so it
 * shows the job whatever page it was started from, live until it ends.
 */

import { shortId, showJob } from './job-view.js';
import { el, uid } from './ui.js';

/**
 * Draw the page, then follow the job (not awaited: the page counts as shown once it is
 * drawn, and the job may run for hours).
 * @param {object} ctx the console context (app.js)
 * @param {{id: string}} params
 * @param {AbortSignal} signal
 */
export async function render(ctx, { id }, signal) {
  document.title = `Job ${shortId(id)} · Gateway console`;
  const headingId = uid('job-title');
  const section = el('section', { class: 'job-page', 'aria-labelledby': headingId });
  ctx.main.append(
    el('p', { class: 'job-back' }, el('a', { href: 'jobs', 'data-nav': true }, 'All jobs')),
    el('h1', { id: headingId }, `Job ${shortId(id)}`),
    section);
  showJob(section, ctx, { id }, signal);
}
