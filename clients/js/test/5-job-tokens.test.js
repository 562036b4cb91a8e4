/**
 * Job tokens (issue 12): against the gateway with auth on (GATEWAY_AUTH_URL), a client that
 * was handed a job's `job_token` reads the job and follows its events with it
 * (`?access_token=`), and a client without a bearer token uses the token of a job resource
 * it received by itself.
 */

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { GatewayClient } from '../src/index.js';

const AUTH_URL = process.env.GATEWAY_AUTH_URL;
const AUTH_TOKEN = process.env.GATEWAY_AUTH_TOKEN;
const skip = AUTH_URL && AUTH_TOKEN ? false : 'GATEWAY_AUTH_URL is not set (no gateway with auth on)';

const collect = async (iterator) => {
  const events = [];
  for await (const event of iterator) events.push(event);
  return events;
};

test('a handed job token opens the job and its events', { skip }, async () => {
  const owner = new GatewayClient({ baseUrl: AUTH_URL, headers: { Authorization: `Bearer ${AUTH_TOKEN}` } });
  const browser = new GatewayClient({ baseUrl: AUTH_URL, transport: 'fetch' });
  const job = await owner.submit('math.add', { a: 1, b: 2 }); // no worker there: stays queued
  assert.equal(typeof job.job_token, 'string');
  await assert.rejects(browser.job(job.id), (error) => error.status === 401);

  const seen = await browser.job(job.id, { jobToken: job.job_token });
  assert.equal(seen.status, 'queued');
  await owner.cancel(job.id);
  // No token passed: the one handed in (then the job resource's own) is used.
  const events = await collect(browser.events(job.id));
  assert.deepEqual(events.map((e) => e.type), ['queued', 'cancelled']);
  assert.equal((await browser.job(job.id)).status, 'cancelled');
  await assert.rejects(browser.job(job.id, { jobToken: '1.bad' }), (error) => error.status === 401);
});

test('events(id, {jobToken}) works from a client that never saw the job', { skip }, async () => {
  const owner = new GatewayClient({ baseUrl: AUTH_URL, headers: { Authorization: `Bearer ${AUTH_TOKEN}` } });
  const job = await owner.submit('math.add', { a: 1, b: 2 });
  await owner.cancel(job.id);
  // A client with a bearer keeps using it, not the tokens it receives.
  assert.equal(owner.jobTokens.has(job.id), false);
  const stranger = new GatewayClient({ baseUrl: AUTH_URL, transport: 'fetch' });
  const events = await collect(stranger.events(job.id, { jobToken: job.job_token }));
  assert.deepEqual(events.map((e) => e.type), ['queued', 'cancelled']);
});
