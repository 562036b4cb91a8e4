// A Node worker for tests/test_js_worker.py, on the JS worker kit (clients/js/src/worker.js).
// Its operations (arguments ROLE=OP, the test gateway's prefixed names):
//   wait   (long-running) prints "waiting ID", then "aborted ID CODE" when job.signal aborts;
//   slow   (long-running) sleeps {"seconds": N} (the kit's heartbeats keep its lease), {"slept": N};
//   echo   (quick) prints "ran ID attempt=N redelivered=B traceparent=HEADER|none trace=TRACE_ID|none",
//          then per request:
//          {"steps": N} N progress events; {"fail": {code, message, details}} a JobFailed;
//          {"bug": true} a TypeError; {"hold_ms": N} sleeps; {"hold_until_redelivered": true}
//          prints "holding ID" and never ends unless redelivered; answers the request;
//   strict (quick, with the contract file contract=PATH) sends {"progress": P} if given, answers
//          {"result": R}'s R: the kit checks both against the contract.
// Every kit log line is printed as "log LEVEL MESSAGE" (debug ones too): the test waits
// for lines on stdout, and the kit's logger option is what this shows.
//
//   GATEWAY_BROKER_URL=amqp://... node tests/node/worker.mjs wait=OP slow=OP echo=OP strict=OP contract=PATH
import { setTimeout as sleep } from 'node:timers/promises';
import { JobFailed, Worker } from '../../clients/js/src/worker.js';

const roles = Object.fromEntries(process.argv.slice(2).map((arg) => [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)]));
const logger = Object.fromEntries(
  ['debug', 'info', 'warn', 'error'].map((level) => [level, (message) => console.log(`log ${level} ${message}`)]),
);
const worker = new Worker(process.env.GATEWAY_BROKER_URL, {
  prefetch: 4,
  gatewayUser: process.env.GATEWAY_USER || undefined,
  shutdownGraceMs: Number(process.env.SHUTDOWN_GRACE_MS ?? 10_000),
  logger,
});

/** Resolves never; rejects with the signal's reason when it aborts. */
const untilAborted = (signal) => new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason)));

worker.operation(roles.wait, async (request, job) => {
  job.signal.addEventListener('abort', () => console.log(`aborted ${job.id} ${job.signal.reason.code}`));
  console.log(`waiting ${job.id}`);
  await untilAborted(job.signal);
}, { longRunning: true });

worker.operation(roles.slow, async ({ seconds }, job) => {
  await sleep(seconds * 1000, undefined, { signal: job.signal });
  return { slept: seconds };
}, { longRunning: true });

worker.operation(roles.echo, async (request, job) => {
  const traceparent = job.headers.traceparent ?? 'none';
  console.log(`ran ${job.id} attempt=${job.attempt} redelivered=${job.redelivered} traceparent=${traceparent} trace=${job.traceId ?? 'none'}`);
  for (let done = 1; done <= (request.steps ?? 0); done += 1) await job.progress({ done, total: request.steps });
  if (request.fail) throw new JobFailed(request.fail.code, request.fail.message, request.fail.details);
  if (request.bug) request.bug.no.such.property = 1; // a TypeError: a bug in a handler
  if (request.hold_ms) await sleep(request.hold_ms);
  if (request.hold_until_redelivered && !job.redelivered) {
    console.log(`holding ${job.id}`);
    await untilAborted(job.signal);
  }
  return request;
});

worker.operation(roles.strict, async (request, job) => {
  if (request.progress !== undefined) await job.progress(request.progress);
  return request.result;
}, { contract: roles.contract });

await worker.run();
console.log('exited');
