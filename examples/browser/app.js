/**
 * The browser example: submit a report.generate job, then show its events live — each
 * progress step as a list item, then the result. Imports the client by relative URL: no
 * bundler, no build step. Query string: ?gateway=URL (default: http://127.0.0.1:8000, where
 * `make run` puts the gateway; `make run` serves this page and opens it with ?gateway= set).
 */

import { GatewayClient } from '../../clients/js/src/index.js';

const params = new URLSearchParams(location.search);
const gateway = new GatewayClient({ baseUrl: params.get('gateway') ?? 'http://127.0.0.1:8000' });

const form = document.querySelector('#report-form');
const statusLine = document.querySelector('#status');
const progressBar = document.querySelector('#progress');
const steps = document.querySelector('#steps');
const resultBox = document.querySelector('#result');

function showStatus(state, text) {
  statusLine.dataset.state = state;
  statusLine.textContent = text;
}

/** One list item per progress event, keyed by seq so a step can never show twice. */
function showProgress(event) {
  if (steps.querySelector(`[data-seq="${event.seq}"]`)) return;
  const { done, total, message } = event.data;
  const item = document.createElement('li');
  item.dataset.seq = String(event.seq);
  item.textContent = `${done}/${total} ${message ?? ''}`.trim();
  steps.append(item);
  progressBar.max = total;
  progressBar.value = done;
}

async function generate(request) {
  steps.replaceChildren();
  resultBox.textContent = '';
  progressBar.value = 0;
  showStatus('submitting', 'Submitting…');
  const job = await gateway.submit('report.generate', request);
  form.dataset.jobId = job.id;
  showStatus('queued', `Job ${job.id} queued.`);
  for await (const event of gateway.events(job.id)) {
    if (event.type === 'started') showStatus('running', `Job ${job.id} running.`);
    else if (event.type === 'progress') showProgress(event);
    else if (event.type === 'result') {
      resultBox.textContent = JSON.stringify(event.data, null, 2);
      showStatus('succeeded', `Job ${job.id} done.`);
    } else if (event.type !== 'queued') {
      showStatus('failed', `Job ${job.id} ${event.type}: ${event.data?.error?.message ?? event.data?.message ?? ''}`);
    }
  }
}

form.addEventListener('submit', (submitEvent) => {
  submitEvent.preventDefault();
  const request = {
    // By id, not form.title: a form's `title` is its own tooltip attribute.
    title: document.querySelector('#title').value,
    sections: Number(document.querySelector('#sections').value),
    seconds_per_section: Number(document.querySelector('#seconds').value),
  };
  generate(request).catch((error) => showStatus('failed', `${error.name}: ${error.message}`));
});
