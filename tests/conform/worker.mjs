/**
 * The test operation `conform.steps` served with the JavaScript kit (clients/js/src/worker.js),
 * on the long-job pattern, for tests/test_conform.py: `gateway conform --claims long` must
 * pass it.
 *
 *     GATEWAY_BROKER_URL=amqp://... node tests/conform/worker.mjs
 *
 * It checks each request against the contract (an off-contract one fails `invalid_request`),
 * works `steps` steps of `seconds` each with a progress answer after each (stopping when
 * `job.signal` aborts: a cancel notice or the deadline), and fails with the code `fail` when
 * asked to.
 */

import { readFile } from 'node:fs/promises';

import { defaultValidator } from '../../clients/js/src/validation.js';
import { JobFailed, Worker } from '../../clients/js/src/worker.js';

const contractUrl = new URL('./conform.steps.json', import.meta.url);
const contract = JSON.parse(await readFile(contractUrl, 'utf8'));
const checkRequest = (await defaultValidator())(contract, 'request');

/** Resolves after `seconds`, or rejects as soon as `signal` aborts. */
function step(seconds, signal) {
  return new Promise((resolve, reject) => {
    signal.throwIfAborted();
    const timer = setTimeout(resolve, seconds * 1000);
    signal.addEventListener('abort', () => { clearTimeout(timer); reject(signal.reason); }, { once: true });
  });
}

const worker = new Worker(process.env.GATEWAY_BROKER_URL);
worker.operation('conform.steps', async (request, job) => {
  const details = checkRequest(request);
  if (details.length > 0) throw new JobFailed('invalid_request', details[0].message, details);
  const total = request.steps;
  for (let done = 1; done <= total; done += 1) {
    await step(request.seconds ?? 0, job.signal);
    await job.progress({ done, total });
  }
  if (request.fail !== undefined) throw new JobFailed(request.fail, 'failed, as the request asked');
  return { steps: total };
}, { longRunning: true, contract: contractUrl });

await worker.run();
