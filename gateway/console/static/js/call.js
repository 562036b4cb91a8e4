/**
 * The call page (route ops/<op>): try an operation from the browser. A form built from
 * its request schema (checked as people type, so nothing invalid is sent), how long to
 * wait for the answer, then the job followed live; and the same call as curl, Python,
 * JavaScript or Perl to take away.
 */

import { schemaEditor } from './form.js';
import { showJob } from './job-view.js';
import { snippets } from './snippets.js';
import { contractCheck, copyAs, el, errorBlock, problemsText, settingPairs } from './ui.js';

/**
 * @param {object} ctx the console context (app.js)
 * @param {{op: string}} params
 * @param {AbortSignal} signal
 */
export async function render(ctx, { op }, signal) {
  document.title = `${op} · Gateway console`;
  const contract = await ctx.client.contract(op, { signal });
  const settings = contract['x-gateway'] ?? {};
  ctx.main.append(
    el('h1', {}, 'Call ', el('code', {}, op)),
    el('p', { class: 'lead' }, settings.description || contract.description || ''),
    el('dl', { class: 'settings' }, settingPairs(settings).map(([name, value]) => el('div', {}, el('dt', {}, name), el('dd', {}, value)))));

  const editor = schemaEditor({ root: contract, definition: 'request', check: await contractCheck(contract, 'request'), label: 'Request' });
  const wait = el('input', { id: 'call-wait', type: 'number', min: 0, step: 'any', value: '10', inputmode: 'decimal', 'aria-describedby': 'call-wait-hint' });
  const deadline = el('input', { id: 'call-deadline', type: 'number', min: 0, step: 'any', inputmode: 'decimal', 'aria-describedby': 'call-deadline-hint' });
  const idempotency = el('input', { id: 'call-idempotency', type: 'text', maxlength: 255, autocomplete: 'off', 'aria-describedby': 'call-idempotency-hint' });
  const submit = el('button', { type: 'submit' }, 'Submit');
  const status = el('p', { class: 'form-status' });
  const outcome = el('div', { class: 'call-job' });
  const copy = copyAs('call');
  let running = null; // the AbortController of the job followed below the form

  const update = () => copy.update(snippets({
    apiBase: ctx.apiBase, op, body: editor.value(), wait: number(wait), auth: !!ctx.me?.auth,
  }));
  editor.onChange(update);
  wait.addEventListener('input', update);
  update();

  const form = el('form', {
    class: 'call', 'aria-labelledby': 'call-request', novalidate: true,
    onsubmit: async (event) => {
      event.preventDefault();
      // The editor's own check first: the first bad field gets focus, nothing is sent.
      const problems = editor.details();
      if (problems.length > 0) {
        editor.focusFirstInvalid();
        status.textContent = problemsText(problems.length, 'request');
        ctx.announce(status.textContent);
        return;
      }
      running?.abort();
      running = new AbortController();
      const stop = AbortSignal.any([signal, running.signal]);
      submit.disabled = true;
      status.textContent = number(wait) ? `Submitted: waiting up to ${number(wait)} s for the result…` : 'Submitting…';
      outcome.replaceChildren();
      let job;
      try {
        job = await ctx.client.submit(op, editor.value(), {
          wait: number(wait), prefer: true, deadlineSeconds: number(deadline), idempotencyKey: idempotency.value || undefined, signal: stop,
        });
      } catch (error) {
        if (stop.aborted) return;
        status.textContent = 'Not accepted: see why below.';
        outcome.replaceChildren(errorBlock(error));
        ctx.announce(`Not accepted: ${error.message}`);
        return;
      } finally {
        submit.disabled = false;
      }
      const done = job.status !== 'queued' && job.status !== 'running';
      status.textContent = done ? `Job ${job.id} ${job.status}.` : `Job ${job.id} accepted.`;
      ctx.announce(status.textContent);
      // The job view says its own status changes and links to the job's page.
      const view = el('div');
      outcome.append(el('h2', {}, 'Job ', el('code', {}, job.id)), view);
      await showJob(view, ctx, job, stop);
    },
  },
  el('h2', { id: 'call-request' }, 'Request'),
  editor.element,
  el('div', { class: 'field' }, el('label', { for: 'call-wait' }, 'Wait (seconds)'), wait,
    el('p', { class: 'hint', id: 'call-wait-hint' }, 'How long the gateway holds the request for the job to finish; 0 answers at once.')),
  el('details', { class: 'more' }, el('summary', {}, 'More'),
    el('div', { class: 'field' }, el('label', { for: 'call-deadline' }, 'Deadline (seconds)'), deadline,
      el('p', { class: 'hint', id: 'call-deadline-hint' }, 'The job expires if it has not finished by then (default: the operation\'s).')),
    el('div', { class: 'field' }, el('label', { for: 'call-idempotency' }, 'Idempotency key'), idempotency,
      el('p', { class: 'hint', id: 'call-idempotency-hint' }, 'The same key again gives back the same job instead of a new one.'))),
  el('div', { class: 'actions' }, submit, status));
  ctx.main.append(form, outcome, copy.element);
}

/** An optional number input's value, or undefined when empty. */
function number(input) {
  return input.value === '' ? undefined : Number(input.value);
}
