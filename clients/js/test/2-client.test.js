/** The client's verbs against the real gateway (GATEWAY_URL), with its example workers. */

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { GatewayClient, GatewayError, JobFailedError } from '../src/index.js';
import { GATEWAY_URL, NEEDS_GATEWAY, startProxy } from './support.js';

const client = () => new GatewayClient({ baseUrl: GATEWAY_URL });
const slowReport = (sections, secondsPerSection = 0.2) => ({
  title: 'Q3',
  sections,
  seconds_per_section: secondsPerSection,
});

/** Collect an events iteration into an array. */
async function collect(iterator) {
  const events = [];
  for await (const event of iterator) events.push(event);
  return events;
}

/** The event log of a report of `sections` sections, in order, exactly once each. */
function assertCompleteReportLog(events, sections) {
  assert.deepEqual(events.map((e) => e.seq), Array.from({ length: sections + 3 }, (_, i) => i + 1));
  assert.deepEqual(events.map((e) => e.type), ['queued', 'started', ...Array(sections).fill('progress'), 'result']);
  assert.deepEqual(
    events.filter((e) => e.type === 'progress').map((e) => e.data.done),
    Array.from({ length: sections }, (_, i) => i + 1),
  );
  assert.equal(events.at(-1).data.sections.length, sections);
}

describe('against the gateway', { skip: NEEDS_GATEWAY }, () => {
  test('ops() lists the operations and contract() returns a draft-07 schema', async () => {
    const gateway = client();
    const ops = await gateway.ops();
    assert.ok(ops.some((o) => o.op === 'math.add'), JSON.stringify(ops));
    const contract = await gateway.contract('math.add');
    assert.equal(contract.$schema, 'http://json-schema.org/draft-07/schema#');
    assert.ok(contract.definitions.request && contract.definitions.result);
  });

  test('submit() returns the queued job, job({wait}) the finished one', async () => {
    const gateway = client();
    const job = await gateway.submit('math.add', { a: 2, b: 3 });
    assert.match(job.id, /^[\w-]{16,}$/);
    assert.equal(job.op, 'math.add');
    const done = await gateway.job(job.id, { wait: 20 });
    assert.equal(done.status, 'succeeded');
    assert.deepEqual(done.result, { sum: 5 });
  });

  test('submit({wait}) answers with the finished job; an idempotency key returns the same job', async () => {
    const gateway = client();
    const key = `js-${Date.now()}-${Math.random()}`;
    const first = await gateway.submit('math.add', { a: 1, b: 1 }, { wait: 20, idempotencyKey: key });
    assert.equal(first.status, 'succeeded');
    const again = await gateway.submit('math.add', { a: 1, b: 1 }, { idempotencyKey: key });
    assert.equal(again.id, first.id);
  });

  test('call() returns the result', async () => {
    assert.deepEqual(await client().call('math.add', { a: 2, b: 3 }, { timeout: 20 }), { sum: 5 });
    assert.deepEqual(await client().call('echo', { nested: [1, { x: 'y' }] }, { timeout: 20 }), {
      nested: [1, { x: 'y' }],
    });
  });

  test('call() long-polls a slow job and reports its progress', async () => {
    const seen = [];
    const result = await client().call('report.generate', slowReport(3), {
      timeout: 30,
      onProgress: (progress) => seen.push(progress.done),
    });
    assert.equal(result.sections.length, 3);
    assert.ok(seen.length >= 1, 'onProgress was called');
    assert.deepEqual(seen, [...new Set(seen)].sort((a, b) => a - b), 'progress only moves forward');
    assert.equal(seen.at(-1) <= 3, true);
  });

  test('events() yields every event of a job in order, with progress, and ends after the result', async () => {
    const gateway = client();
    const job = await gateway.submit('report.generate', slowReport(3));
    assertCompleteReportLog(await collect(gateway.events(job.id)), 3);
    // Asked again after the end, it replays from `after` and still ends.
    const tail = await collect(gateway.events(job.id, { after: 4 }));
    assert.deepEqual(tail.map((e) => e.seq), [5, 6]);
  });

  test('cancel() cancels a running job (twice is fine); call() then throws JobFailedError', async () => {
    const gateway = client();
    const job = await gateway.submit('report.generate', slowReport(50, 0.5));
    const cancelled = await gateway.cancel(job.id);
    assert.equal(cancelled.status, 'cancelled');
    assert.equal((await gateway.cancel(job.id)).status, 'cancelled');
    const events = await collect(gateway.events(job.id));
    assert.equal(events.at(-1).type, 'cancelled');
    await assert.rejects(
      gateway.call('report.generate', slowReport(50, 0.5), { timeout: 30, onProgress: (_, j) => gateway.cancel(j.id) }),
      (error) => {
        assert.ok(error instanceof JobFailedError, String(error));
        assert.equal(error.job.status, 'cancelled');
        assert.equal(error.code, 'cancelled');
        return true;
      },
    );
  });

  test('cancelling a job that already succeeded is a 409 job_finished GatewayError', async () => {
    const gateway = client();
    const job = await gateway.submit('math.add', { a: 1, b: 2 }, { wait: 20 });
    assert.equal(job.status, 'succeeded');
    await assert.rejects(gateway.cancel(job.id), { name: 'GatewayError', status: 409, code: 'job_finished' });
  });

  test('deadlineSeconds expires a slow job (JobFailedError expired); a call timeout is a local GatewayError', async () => {
    const gateway = client();
    await assert.rejects(
      gateway.call('report.generate', slowReport(40, 0.25), { deadlineSeconds: 1, timeout: 30 }),
      (error) => {
        assert.ok(error instanceof JobFailedError, String(error));
        assert.equal(error.job.status, 'expired');
        assert.equal(error.code, 'expired');
        return true;
      },
    );
    let timedOut;
    await assert.rejects(gateway.call('report.generate', slowReport(40, 0.25), { timeout: 0.5 }), (error) => {
      assert.ok(error instanceof GatewayError);
      assert.equal(error.code, 'timeout');
      assert.equal(error.local, true);
      assert.ok(!['succeeded', 'failed', 'cancelled', 'expired'].includes(error.job.status));
      timedOut = error.job;
      return true;
    });
    await gateway.cancel(timedOut.id);
    await assert.rejects(gateway.submit('math.add', { a: 1, b: 2 }, { deadlineSeconds: 0 }), {
      status: 400,
      code: 'invalid_parameter',
    });
  });

  test('a request against the contract is a 422 GatewayError with JSON-pointer details', async () => {
    await assert.rejects(client().submit('math.add', { a: 'one' }), (error) => {
      assert.ok(error instanceof GatewayError);
      assert.equal(error.status, 422);
      assert.equal(error.code, 'invalid_request');
      assert.equal(error.local, false);
      assert.ok(error.details.length >= 1);
      for (const detail of error.details) {
        assert.equal(typeof detail.message, 'string');
        assert.match(detail.path, /^(\/.*)?$/);
      }
      assert.ok(error.details.some((d) => d.path === '/a'), JSON.stringify(error.details));
      return true;
    });
  });

  test('unknown operations and jobs are 404 GatewayErrors', async () => {
    await assert.rejects(client().submit('no.such.op', {}), { name: 'GatewayError', status: 404, code: 'unknown_op' });
    await assert.rejects(client().job('no-such-job'), { name: 'GatewayError', status: 404, code: 'job_not_found' });
    await assert.rejects(collect(client().events('no-such-job')), { status: 404, code: 'job_not_found' });
  });

  test('validate: true rejects locally, in the server\'s shape, without sending the request', async () => {
    const sent = [];
    const countingFetch = (url, init) => {
      sent.push(`${init?.method ?? 'GET'} ${new URL(url).pathname}`);
      return fetch(url, init);
    };
    const gateway = new GatewayClient({ baseUrl: GATEWAY_URL, fetch: countingFetch, validate: true });
    await assert.rejects(gateway.submit('math.add', { a: 1, b: 2, c: 3 }), (error) => {
      assert.ok(error instanceof GatewayError);
      assert.equal(error.status, 422);
      assert.equal(error.code, 'invalid_request');
      assert.equal(error.local, true);
      assert.deepEqual(error.details.map((d) => d.path), ['']);
      return true;
    });
    await assert.rejects(gateway.call('math.add', { a: 'x', b: 2 }), { code: 'invalid_request', local: true });
    assert.deepEqual(sent, ['GET /v1/ops/math.add'], 'only the contract was fetched, once');
    assert.deepEqual(await gateway.call('math.add', { a: 1, b: 2 }, { timeout: 20 }), { sum: 3 });
    assert.equal(sent.filter((s) => s.startsWith('POST')).length, 1);
  });

  test('an AbortSignal aborts a long-poll wait', async () => {
    const gateway = client();
    const job = await gateway.submit('report.generate', slowReport(100, 0.5));
    try {
      const controller = new AbortController();
      const started = Date.now();
      const waiting = gateway.job(job.id, { wait: 50, after: 1000, signal: controller.signal });
      setTimeout(() => controller.abort(), 200);
      await assert.rejects(waiting, { name: 'AbortError' });
      assert.ok(Date.now() - started < 10_000, 'the abort ended the wait early');
      // events() and call() take the signal too.
      await assert.rejects(
        collect(gateway.events(job.id, { signal: AbortSignal.timeout(500) })),
        { name: 'TimeoutError' },
      );
    } finally {
      await gateway.cancel(job.id);
    }
  });

  test('events() resumes after a dropped connection, yielding every seq exactly once', async () => {
    const proxy = await startProxy(GATEWAY_URL);
    try {
      const gateway = new GatewayClient({ baseUrl: proxy.url });
      const sections = 6;
      const job = await gateway.submit('report.generate', slowReport(sections, 0.5));
      const events = [];
      for await (const event of gateway.events(job.id)) {
        events.push(event);
        if (event.type === 'progress' && event.data.done === 1) proxy.cut();
      }
      assertCompleteReportLog(events, sections);
      const streams = proxy.requests.filter((r) => r.path.includes('/events'));
      assert.ok(streams.length >= 2, `reconnected: ${JSON.stringify(streams)}`);
      const cutAt = events.find((e) => e.type === 'progress').seq;
      assert.equal(streams[1].headers['last-event-id'], String(cutAt));
    } finally {
      await proxy.close();
    }
  });

  test('events() gives up on a gateway that went away after reconnectTimeout, backing off; a signal stops it sooner', async () => {
    const reconnectTimeout = 5;
    const proxy = await startProxy(GATEWAY_URL);
    const attempts = []; // when each stream request was made
    const gateway = new GatewayClient({
      baseUrl: proxy.url,
      reconnectTimeout,
      fetch: (url, init) => {
        if (new URL(url).pathname.endsWith('/events')) attempts.push(Date.now());
        return fetch(url, init);
      },
    });
    const job = await client().submit('report.generate', slowReport(1, 60));
    try {
      let wentAway;
      await assert.rejects(
        (async () => {
          for await (const event of gateway.events(job.id)) {
            if (wentAway === undefined && event.type === 'queued') {
              await proxy.close(); // listener and connections: nothing answers there now
              wentAway = Date.now();
            }
          }
        })(),
        (error) => {
          assert.ok(error instanceof GatewayError, String(error));
          assert.equal(error.code, 'unreachable');
          assert.equal(error.status, 0);
          assert.equal(error.local, true);
          assert.match(error.message, new RegExp(`^cannot reach the gateway at ${proxy.url}: `));
          return true;
        },
      );
      const elapsed = (Date.now() - wentAway) / 1000;
      // The limit, plus the one `retry:` wait after the drop (before failures count).
      assert.ok(elapsed <= reconnectTimeout + 3, `gave up after ${elapsed} s`);
      const retries = attempts.slice(1);
      assert.ok(retries.length >= 2, `${retries.length} reconnect attempts`);
      assert.ok(retries[1] - retries[0] >= 1000, 'backed off between failed attempts');

      // An AbortSignal ends the wait between attempts long before a (long) reconnectTimeout.
      const started = Date.now();
      await assert.rejects(
        collect(gateway.events(job.id, { reconnectTimeout: 600, signal: AbortSignal.timeout(1000) })),
        { name: 'TimeoutError' },
      );
      assert.ok(Date.now() - started < 5000, 'the signal stopped the retries');
    } finally {
      await client().cancel(job.id);
    }
  });
});
