/**
 * What the web console reads: `me()` (who am I, with auth off and on), `opStats(op)` (an
 * operation's queue and recent jobs) and `jobs()` (the caller's jobs, a page at a time),
 * against the gateway (GATEWAY_URL, with the example workers) and the one with auth on
 * (GATEWAY_AUTH_URL, no workers: its jobs stay queued until cancelled).
 */

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { GatewayClient } from '../src/index.js';
import { GATEWAY_URL, NEEDS_GATEWAY } from './support.js';

const AUTH_URL = process.env.GATEWAY_AUTH_URL;
const AUTH_TOKEN = process.env.GATEWAY_AUTH_TOKEN;
const NEEDS_AUTH_GATEWAY = AUTH_URL && AUTH_TOKEN ? false : 'GATEWAY_AUTH_URL is not set (no gateway with auth on)';

const client = () => new GatewayClient({ baseUrl: GATEWAY_URL });
const authed = () => new GatewayClient({ baseUrl: AUTH_URL, headers: { Authorization: `Bearer ${AUTH_TOKEN}` } });

/** The shape every `opStats()` answer has, whatever its figures. */
function assertStatsShape(stats, op) {
  assert.equal(stats.op, op);
  for (const name of ['accepted', 'finished', 'sampled']) assert.ok(Number.isInteger(stats[name]), name);
  assert.deepEqual(Object.keys(stats.outcomes).sort(), ['cancelled', 'expired', 'failed', 'succeeded']);
  assert.equal(stats.window_seconds, 300);
  assert.equal(stats.complete, true);
  for (const name of ['queue_wait_seconds', 'run_seconds']) {
    const p = stats[name];
    if (p !== null) assert.ok(p.p50 <= p.p90 && p.p90 <= p.max, `${name}: ${JSON.stringify(p)}`);
  }
}

describe('against the gateway (auth off)', { skip: NEEDS_GATEWAY }, () => {
  test('submit() with prefer: true asks for the wait as a Prefer header, not ?wait=', async () => {
    const seen = [];
    const gateway = new GatewayClient({
      baseUrl: GATEWAY_URL,
      fetch: (url, init) => { seen.push([String(url), init.headers.Prefer]); return fetch(url, init); },
    });
    const job = await gateway.submit('math.add', { a: 20, b: 22 }, { wait: 10, prefer: true });
    assert.equal(job.status, 'succeeded');
    assert.deepEqual(job.result, { sum: 42 });
    assert.ok(!seen[0][0].includes('wait='), seen[0][0]);
    assert.equal(seen[0][1], 'wait=10');
  });

  test('me() says auth is off: no subject, every scope', async () => {
    assert.deepEqual(await client().me(), {
      auth: false,
      subject: null,
      scopes: ['ops:*', 'topics:publish:*', 'topics:subscribe:*'],
    });
  });

  test('opStats() shows the workers consuming and the jobs that ran', async () => {
    const gateway = client();
    assert.deepEqual(await gateway.call('math.add', { a: 20, b: 22 }, { timeout: 20 }), { sum: 42 });
    const stats = await gateway.opStats('math.add');
    assertStatsShape(stats, 'math.add');
    assert.equal(stats.queue.name, 'math.add');
    assert.ok(stats.queue.consumers >= 1, JSON.stringify(stats.queue)); // the example worker
    assert.equal(stats.queue.messages, 0);
    assert.ok(stats.accepted >= 1 && stats.finished >= 1 && stats.outcomes.succeeded >= 1, JSON.stringify(stats));
    assert.ok(stats.accepted_per_minute > 0);
    assert.notEqual(stats.queue_wait_seconds, null);
    assert.notEqual(stats.run_seconds, null);
  });

  test('opStats() of an unknown operation is a 404 unknown_op GatewayError', async () => {
    await assert.rejects(client().opStats('no.such.op'), { name: 'GatewayError', status: 404, code: 'unknown_op' });
  });

  test('jobs() lists every job with auth off, filtered by op and status', async () => {
    const gateway = client();
    const job = await gateway.submit('echo', { console: 'jobs' }, { wait: 20 });
    assert.equal(job.status, 'succeeded');
    const page = await gateway.jobs({ op: 'echo', status: 'succeeded', limit: 5 });
    assert.equal(page.jobs[0].id, job.id, 'newest first');
    assert.ok(page.jobs.every((j) => j.op === 'echo' && j.status === 'succeeded'));
    await assert.rejects(gateway.jobs({ status: 'sleeping' }), { status: 400, code: 'invalid_parameter' });
  });
});

describe('against the gateway with auth on', { skip: NEEDS_AUTH_GATEWAY }, () => {
  test('me() names the API key\'s subject and scopes, never the key; no token is a 401', async () => {
    const me = await authed().me();
    assert.deepEqual(me, {
      auth: true,
      subject: 'key:suite',
      scopes: ['ops:*', 'topics:publish:*', 'topics:subscribe:*'],
    });
    assert.ok(!JSON.stringify(me).includes(AUTH_TOKEN));
    await assert.rejects(new GatewayClient({ baseUrl: AUTH_URL }).me(), { status: 401, code: 'unauthorized' });
  });

  test('opStats() counts jobs waiting with no worker; needs a token', async () => {
    const gateway = authed();
    const job = await gateway.submit('text.upper', { text: 'waiting' });
    try {
      const stats = await gateway.opStats('text.upper');
      assertStatsShape(stats, 'text.upper');
      assert.equal(stats.queue.consumers, 0); // no workers on this gateway
      assert.ok(stats.queue.messages >= 1, JSON.stringify(stats.queue));
      assert.ok(stats.accepted >= 1);
    } finally {
      await gateway.cancel(job.id);
    }
    await assert.rejects(new GatewayClient({ baseUrl: AUTH_URL }).opStats('text.upper'), { status: 401 });
  });

  test('jobs() pages through the caller\'s own jobs with next_cursor', async () => {
    const gateway = authed();
    const first = await gateway.submit('echo', { n: 1 });
    const second = await gateway.submit('echo', { n: 2 });
    try {
      const page = await gateway.jobs({ op: 'echo', status: 'queued', limit: 1 });
      assert.deepEqual(page.jobs.map((j) => j.id), [second.id]);
      assert.equal(typeof page.next_cursor, 'string');
      const next = await gateway.jobs({ op: 'echo', status: 'queued', limit: 1, cursor: page.next_cursor });
      assert.deepEqual(next.jobs.map((j) => j.id), [first.id]);
    } finally {
      await gateway.cancel(first.id);
      await gateway.cancel(second.id);
    }
    const cancelled = await gateway.jobs({ op: 'echo', status: 'cancelled', limit: 2 });
    assert.deepEqual(cancelled.jobs.map((j) => j.id), [second.id, first.id]);
    await assert.rejects(new GatewayClient({ baseUrl: AUTH_URL }).jobs(), { status: 401 });
  });
});
