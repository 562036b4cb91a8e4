/**
 * Topics (issue 14): publish and subscribe against the real gateway (GATEWAY_URL), which
 * serves schemas/topics/ (chat.room); messages from the Perl and Python clients; a page in
 * Chromium (EventSource); subscribe tokens on the auth gateway (GATEWAY_AUTH_URL). Every
 * test talks in rooms of its own (chat.room.<random>), so that tests, suites and runs never
 * see each other's messages. First, without a gateway, how subscribe() reads a stream
 * (through a scripted fetch).
 */

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { GatewayClient, GatewayError } from '../src/index.js';
import {
  GATEWAY_PAGE_ORIGIN, GATEWAY_SCHEMAS, GATEWAY_URL, NEEDS_GATEWAY, REPO_ROOT,
  launchChromium, startProxy, startStaticServer,
} from './support.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const PYTHON = join(REPO_ROOT, '.venv', 'bin', 'python');
const AUTH_URL = process.env.GATEWAY_AUTH_URL;
const AUTH_TOKEN = process.env.GATEWAY_AUTH_TOKEN;

/** Upper limit for anything to arrive; the tests wait for messages, not the clock. */
const ARRIVAL_MS = 30_000;

/** A room of this test's own: a key of the chat.room family. */
const newRoom = () => `chat.room.js-${randomBytes(6).toString('hex')}`;
const client = (options = {}) => new GatewayClient({ baseUrl: GATEWAY_URL, ...options });
const line = (topic, n) => ({ from: 'js', text: `${topic} #${n}` });

/**
 * The first `count` messages of a subscription (which is then closed), or a failure that
 * says what did arrive. `subscription` should carry a signal that bounds the wait.
 */
async function take(subscription, count) {
  return takeUntil(subscription, (seen) => seen.length === count);
}

/** Messages until `enough(seen)` holds (checked, and awaited, after each one). */
async function takeUntil(subscription, enough) {
  const seen = [];
  try {
    for await (const message of subscription) {
      seen.push(message);
      if (await enough(seen)) break;
    }
  } catch (error) {
    throw new Error(`after ${seen.length} messages (${JSON.stringify(seen.map((m) => m.data))}): ${error}`, {
      cause: error,
    });
  }
  return seen;
}

/** A signal for one subscription: aborts after ARRIVAL_MS. */
const bounded = () => AbortSignal.timeout(ARRIVAL_MS);

function assertIncreasing(seqs) {
  for (let i = 1; i < seqs.length; i += 1) assert.ok(seqs[i] > seqs[i - 1], `seqs not increasing: ${seqs}`);
}

describe('subscribe() reading a scripted stream (no gateway)', () => {
  /**
   * A fetch that answers the stream requests with `bodies` in turn (then 404), a long-poll
   * (`?wait=`) with no messages and `next: position`, and `routes` (path → JSON); it
   * records the requests.
   */
  function scriptedFetch(bodies, routes = {}, position = 3) {
    const requests = [];
    const fetch = async (url, init = {}) => {
      const { pathname, searchParams } = new URL(url);
      requests.push({ pathname, after: searchParams.get('after'), wait: searchParams.get('wait'), headers: init.headers ?? {} });
      if (routes[pathname]) return Response.json(routes[pathname]);
      if (searchParams.has('wait')) return Response.json({ events: [], next: position });
      const body = bodies.shift();
      if (body === undefined) {
        return Response.json({ error: { code: 'unknown_topic', message: 'gone' } }, { status: 404 });
      }
      return new Response(body, { headers: { 'Content-Type': 'text/event-stream' } });
    };
    return { fetch, requests };
  }

  const frame = (seq, data) => `id: ${seq}\nevent: message\ndata: ${JSON.stringify(data)}\n\n`;

  test('starts from the position now, yields {seq, topic, data} once each, resuming by Last-Event-ID from the last seq (or an id-only block)', async () => {
    const { fetch, requests } = scriptedFetch([
      `: hello\nretry: 5\n\n${frame(5, { text: 'a' })}`,
      `retry: 5\n\n${frame(5, { text: 'a' })}${frame(7, { text: 'b' })}: ping\n\nid: 9\n\n`,
      `retry: 5\n\n${frame(12, { text: 'c' })}`,
    ]);
    const gateway = new GatewayClient({ baseUrl: 'http://gateway.invalid', fetch });
    const seen = [];
    await assert.rejects(
      (async () => {
        for await (const message of gateway.subscribe('chat.room.1', { signal: bounded() })) seen.push(message);
      })(),
      { name: 'GatewayError', status: 404, code: 'unknown_topic' },
    );
    assert.deepEqual(seen, [
      { seq: 5, topic: 'chat.room.1', data: { text: 'a' } },
      { seq: 7, topic: 'chat.room.1', data: { text: 'b' } },
      { seq: 12, topic: 'chat.room.1', data: { text: 'c' } },
    ]);
    const streams = requests.map((r) => [r.pathname, r.wait, r.after, r.headers['Last-Event-ID'] ?? null]);
    assert.deepEqual(streams, [
      ['/v1/topics/chat.room.1/events', '0', null, null], // no after: where is "now"?
      ['/v1/topics/chat.room.1/events', null, '3', null], // there (no Last-Event-ID: not a resume)
      ['/v1/topics/chat.room.1/events', null, '5', '5'],
      ['/v1/topics/chat.room.1/events', null, '9', '9'], // the id-only block moved the position
      ['/v1/topics/chat.room.1/events', null, '12', '12'],
    ]);
    assert.equal(requests[0].headers.Accept, 'application/json');
    assert.equal(requests[1].headers.Accept, 'text/event-stream');
  });

  test('after: 0 asks for everything retained; validate: true throws invalid_message at a message off the contract', async () => {
    const contract = JSON.parse(await readFile(join(GATEWAY_SCHEMAS, 'topics', 'chat.room.json'), 'utf8'));
    const { fetch, requests } = scriptedFetch(
      [`retry: 5\n\n${frame(1, { from: 'ann', text: 'hi' })}${frame(2, { from: 'ann' })}${frame(3, { from: 'ann', text: 'x' })}`],
      { '/v1/topics/chat.room.2': contract },
    );
    const gateway = new GatewayClient({ baseUrl: 'http://gateway.invalid', fetch });
    const seen = [];
    await assert.rejects(
      (async () => {
        for await (const m of gateway.subscribe('chat.room.2', { after: 0, validate: true, signal: bounded() })) seen.push(m);
      })(),
      (error) => {
        assert.ok(error instanceof GatewayError, String(error));
        assert.equal(error.code, 'invalid_message');
        assert.equal(error.local, true);
        assert.equal(error.seq, 2);
        assert.deepEqual(error.details.map((d) => d.path), ['']);
        return true;
      },
    );
    assert.deepEqual(seen.map((m) => m.seq), [1]);
    assert.equal(requests[0].after, '0');
    assert.equal(requests[0].headers['Last-Event-ID'], undefined, 'a first connection sends no Last-Event-ID');
  });
});

describe('topics against the gateway', { skip: NEEDS_GATEWAY }, () => {
  test('topics() lists chat.room; topicContract() gives the contract for a key of the family', async () => {
    const gateway = client();
    const topics = await gateway.topics();
    const chat = topics.find((t) => t.name === 'chat.room');
    assert.ok(chat, JSON.stringify(topics));
    assert.equal(chat.href, '/v1/topics/chat.room');
    assert.equal(chat.events, '/v1/topics/chat.room/events');
    const contract = await gateway.topicContract(newRoom());
    assert.ok(contract.definitions.message, JSON.stringify(contract));
    assert.equal(typeof contract['x-gateway'].max_age, 'string');
  });

  test('publish() then subscribe({after: 0}) finds the messages, in order', async () => {
    const gateway = client();
    const topic = newRoom();
    const published = await gateway.publish(topic, line(topic, 1));
    assert.equal(published.topic, topic);
    assert.equal(typeof published.message_id, 'string');
    await gateway.publish(topic, line(topic, 2));

    const seen = await take(gateway.subscribe(topic, { after: 0, signal: bounded() }), 2);
    assert.deepEqual(seen.map((m) => m.data), [line(topic, 1), line(topic, 2)]);
    assert.deepEqual(seen.map((m) => m.topic), [topic, topic]);
    assertIncreasing(seen.map((m) => m.seq));
    // after: a seq starts past it.
    const rest = await take(gateway.subscribe(topic, { after: seen[0].seq, signal: bounded() }), 1);
    assert.deepEqual(rest, [seen[1]]);
  });

  test('subscribe() without after gets what is published from then on, in order', async () => {
    const topic = newRoom();
    await client().publish(topic, line(topic, 0)); // before: never seen
    let connected;
    const isConnected = new Promise((resolve) => {
      connected = resolve;
    });
    const subscriber = client({
      fetch: async (url, init) => {
        const response = await fetch(url, init);
        if (new URL(url).pathname.endsWith('/events')) connected(response.status);
        return response;
      },
    });
    const arriving = take(subscriber.subscribe(topic, { signal: bounded() }), 5);
    assert.equal(await isConnected, 200);
    const publisher = client();
    for (let n = 1; n <= 5; n += 1) await publisher.publish(topic, line(topic, n));
    const seen = await arriving;
    assert.deepEqual(seen.map((m) => m.data), [1, 2, 3, 4, 5].map((n) => line(topic, n)));
    assertIncreasing(seen.map((m) => m.seq));
  });

  test('a subscription without after, cut before its first message, misses nothing published meanwhile', async () => {
    const proxy = await startProxy(GATEWAY_URL);
    try {
      const topic = newRoom();
      let opened;
      const isOpen = new Promise((resolve) => {
        opened = resolve;
      });
      const subscriber = new GatewayClient({
        baseUrl: proxy.url,
        fetch: async (url, init) => {
          const response = await fetch(url, init);
          if (init?.headers?.Accept === 'text/event-stream') opened();
          return response;
        },
      });
      const arriving = take(subscriber.subscribe(topic, { signal: bounded() }), 2);
      await isOpen;
      proxy.cut();
      const publisher = client();
      for (let n = 1; n <= 2; n += 1) await publisher.publish(topic, line(topic, n));
      const seen = await arriving;
      assert.deepEqual(seen.map((m) => m.data), [line(topic, 1), line(topic, 2)]);
      const streams = proxy.requests.filter((r) => r.path.includes('/events') && !r.path.includes('wait='));
      assert.ok(streams.length >= 2, `reconnected: ${JSON.stringify(streams)}`);
      const start = new URL(streams[0].path, proxy.url).searchParams.get('after');
      assert.match(start ?? '', /^\d+$/, 'the stream started at a seq');
      assert.equal(new URL(streams[1].path, proxy.url).searchParams.get('after'), start, 'and resumed there');
    } finally {
      await proxy.close();
    }
  });

  test('a cut connection resumes by Last-Event-ID: after message k come k+1… exactly once', async () => {
    const proxy = await startProxy(GATEWAY_URL);
    try {
      const topic = newRoom();
      const publisher = client();
      for (let n = 1; n <= 3; n += 1) await publisher.publish(topic, line(topic, n));
      const subscriber = new GatewayClient({ baseUrl: proxy.url });
      const seen = await takeUntil(subscriber.subscribe(topic, { after: 0, signal: bounded() }), (sofar) => {
        if (sofar.length === 3) {
          proxy.cut();
          // Published while the subscriber is away: it must find them when it comes back.
          return Promise.all([4, 5, 6].map((n) => publisher.publish(topic, line(topic, n)))).then(() => false);
        }
        return sofar.length === 6;
      });
      assert.deepEqual(
        seen.map((m) => m.data.text).sort(),
        [1, 2, 3, 4, 5, 6].map((n) => line(topic, n).text).sort(),
      );
      assert.deepEqual(seen.slice(0, 3).map((m) => m.data), [1, 2, 3].map((n) => line(topic, n)));
      assertIncreasing(seen.map((m) => m.seq));
      const streams = proxy.requests.filter((r) => r.path.includes('/events'));
      assert.ok(streams.length >= 2, `reconnected: ${JSON.stringify(streams)}`);
      assert.equal(streams[1].headers['last-event-id'], String(seen[2].seq));
    } finally {
      await proxy.close();
    }
  });

  test('a key subscription gets that key only; the family gets every key, in publishing order', async () => {
    const gateway = client();
    const [a, b] = [newRoom(), newRoom()];
    const order = [[a, 1], [b, 1], [a, 2], [b, 2]];
    for (const [topic, n] of order) await gateway.publish(topic, line(topic, n));

    const onlyA = await take(gateway.subscribe(a, { after: 0, signal: bounded() }), 2);
    assert.deepEqual(onlyA.map((m) => m.data), [line(a, 1), line(a, 2)]);
    const onlyB = await take(gateway.subscribe(b, { after: 0, signal: bounded() }), 2);
    assert.deepEqual(onlyB.map((m) => m.data), [line(b, 1), line(b, 2)]);

    // The family, from just before a's first message: seqs are the stream's, shared by all.
    const ours = (m) => m.data.text.startsWith(`${a} `) || m.data.text.startsWith(`${b} `);
    const family = await takeUntil(
      gateway.subscribe('chat.room', { after: onlyA[0].seq - 1, signal: bounded() }),
      (seen) => seen.filter(ours).length === 4,
    );
    const mine = family.filter(ours);
    assert.deepEqual(mine.map((m) => m.data), order.map(([topic, n]) => line(topic, n)));
    assert.deepEqual(mine.map((m) => m.seq), [onlyA[0].seq, onlyB[0].seq, onlyA[1].seq, onlyB[1].seq]);
    assert.ok(family.every((m) => m.topic === 'chat.room'));
    assertIncreasing(family.map((m) => m.seq));
  });

  test('a message against the contract is a 422 with the details of the shared vectors; validate refuses it unsent, alike', async () => {
    const vectors = JSON.parse(await readFile(join(GATEWAY_SCHEMAS, 'vectors', 'chat.room.json'), 'utf8'));
    const topic = newRoom();
    const sent = [];
    const checking = client({
      validate: true,
      fetch: (url, init) => {
        sent.push(`${init?.method ?? 'GET'} ${new URL(url).pathname}`);
        return fetch(url, init);
      },
    });
    for (const testCase of vectors.cases.filter((c) => !c.valid)) {
      let served;
      await assert.rejects(client().publish(topic, testCase.data), (error) => {
        assert.ok(error instanceof GatewayError, String(error));
        assert.equal(error.status, 422);
        assert.equal(error.code, 'invalid_request');
        assert.equal(error.local, false);
        served = error;
        return true;
      });
      assert.deepEqual(served.details.map((d) => d.path), testCase.details, `${testCase.description}: the gateway`);
      await assert.rejects(checking.publish(topic, testCase.data), (error) => {
        assert.ok(error instanceof GatewayError, String(error));
        assert.equal(error.status, 422);
        assert.equal(error.code, 'invalid_request');
        assert.equal(error.local, true);
        assert.deepEqual(error.details.map((d) => d.path), served.details.map((d) => d.path), testCase.description);
        return true;
      });
    }
    assert.deepEqual(sent, [`GET /v1/topics/${topic}`], 'only the contract was fetched, once');
    await checking.publish(topic, line(topic, 1));
    assert.equal(sent.filter((s) => s.startsWith('POST')).length, 1, 'a valid message is sent');
    // Per call: a client that does not validate by default can be asked to.
    await assert.rejects(client().publish(topic, { from: 'js' }, { validate: true }), { code: 'invalid_request', local: true });
    // Nothing invalid reached the room.
    const seen = await take(client().subscribe(topic, { after: 0, signal: bounded() }), 1);
    assert.deepEqual(seen.map((m) => m.data), [line(topic, 1)]);
  });

  test('an unknown topic is a 404 unknown_topic, a malformed one a 400 invalid_topic, for every verb', async () => {
    const gateway = client();
    await assert.rejects(gateway.publish('no.such.topic', { text: 'x' }), { name: 'GatewayError', status: 404, code: 'unknown_topic' });
    await assert.rejects(gateway.topicContract('no.such.topic'), { status: 404, code: 'unknown_topic' });
    await assert.rejects(take(gateway.subscribe('no.such.topic', { signal: bounded() }), 1), (error) => {
      assert.equal(error.cause?.status, 404, String(error));
      assert.equal(error.cause.code, 'unknown_topic');
      return true;
    });
    await assert.rejects(gateway.publish('chat.room.*', line('x', 1)), { status: 400, code: 'invalid_topic' });
    await assert.rejects(take(gateway.subscribe('chat..room', { signal: bounded() }), 1), (error) => {
      assert.equal(error.cause?.status, 400, String(error));
      assert.equal(error.cause.code, 'invalid_topic');
      return true;
    });
  });

  /** How each other client publishes `text` to `topic` (as `from: <language>`), printing the message id. */
  const PUBLISHERS = {
    perl: [
      'perl',
      `-I${join(REPO_ROOT, 'clients/perl/lib')}`,
      '-e',
      [
        'use Encode qw(decode);',
        'use Gateway::Client;',
        'my ($url, $topic, $text) = map { decode("UTF-8", $_) } @ARGV;',
        'my $sent = Gateway::Client->new(base_url => $url)->publish($topic, { from => "perl", text => $text });',
        'print $sent->{ok} ? "$sent->{message_id}\\n" : "failed: $sent->{status} $sent->{error}{code}\\n";',
        'exit($sent->{ok} ? 0 : 1);',
      ].join(' '),
    ],
    python: [
      PYTHON,
      '-c',
      [
        'import sys',
        'from gateway.client import Client',
        'url, topic, text = sys.argv[1:]',
        'with Client(url) as gw: print(gw.publish(topic, {"from": "python", "text": text})["message_id"])',
      ].join('\n'),
    ],
  };

  for (const [language, [command, ...args]] of Object.entries(PUBLISHERS)) {
    const skip = language === 'python' && !existsSync(PYTHON) && `no Python environment at ${PYTHON}`;
    test(`a message published by the ${language} client reaches a JS subscriber`, { skip }, async () => {
      const topic = newRoom();
      const arriving = take(client().subscribe(topic, { after: 0, signal: bounded() }), 1);
      const text = `grüße aus ${language} ✓`;
      const { stdout } = await promisify(execFile)(command, [...args, GATEWAY_URL, topic, text], {
        cwd: REPO_ROOT,
        timeout: ARRIVAL_MS,
      });
      assert.match(stdout, /^\S+\n$/);
      const [message] = await arriving;
      assert.deepEqual(message.data, { from: language, text });
    });
  }
});

describe('a topic subscription in Chromium (EventSource)', {
  skip: NEEDS_GATEWAY
    || (!GATEWAY_PAGE_ORIGIN && 'GATEWAY_PAGE_ORIGIN is not set')
    || (!existsSync(CHROMIUM) && `no Chromium at ${CHROMIUM}`),
}, () => {
  let browser;
  let site;

  before(async () => {
    site = await startStaticServer(GATEWAY_PAGE_ORIGIN, {
      '/clients/js/src/': join(REPO_ROOT, 'clients/js/src'),
      '/clients/js/test/browser/': join(REPO_ROOT, 'clients/js/test/browser'),
    });
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    await site?.close();
  });

  test('a page subscribes over EventSource, and resumes by Last-Event-ID after a cut', async () => {
    const proxy = await startProxy(GATEWAY_URL);
    const page = await browser.newPage();
    const problems = [];
    page.on('console', (message) => message.type() === 'error' && problems.push(message.text()));
    page.on('pageerror', (error) => problems.push(String(error)));
    const received = async (count) => {
      await page.waitForFunction((n) => window.received.length >= n || window.failure, count, { timeout: ARRIVAL_MS })
        .catch((error) => { throw new Error(`${error.message}\n${problems.join('\n')}`); });
      const state = await page.evaluate(() => ({ received: window.received, failure: window.failure }));
      assert.equal(state.failure, undefined);
      return state.received;
    };
    try {
      const topic = newRoom();
      const publisher = client();
      await publisher.publish(topic, line(topic, 1));
      await publisher.publish(topic, line(topic, 2));
      const query = new URLSearchParams({ gateway: proxy.url, topic, after: '0' });
      await page.goto(`${GATEWAY_PAGE_ORIGIN}/clients/js/test/browser/topics.html?${query}`);
      assert.deepEqual((await received(2)).map((m) => m.data), [line(topic, 1), line(topic, 2)]);
      assert.equal(await page.evaluate(() => window.usesEventSource), true);

      proxy.cut();
      await publisher.publish(topic, line(topic, 3));
      await publisher.publish(topic, line(topic, 4));
      const all = await received(4);
      assert.deepEqual(all.map((m) => m.data), [1, 2, 3, 4].map((n) => line(topic, n)));
      assertIncreasing(all.map((m) => m.seq));
      const resumed = proxy.requests.filter((r) => r.path.includes('/events') && r.headers['last-event-id']);
      assert.ok(resumed.length >= 1, `no reconnect with Last-Event-ID: ${JSON.stringify(proxy.requests)}`);
      assert.equal(resumed[0].headers['last-event-id'], String(all[1].seq));
      assert.equal(await page.evaluate(() => window.sources), 1, 'the browser reconnected by itself');
    } finally {
      await page.close();
      await proxy.close();
    }
  });
});

describe('subscribe tokens (auth on)', { skip: AUTH_URL && AUTH_TOKEN ? false : 'GATEWAY_AUTH_URL is not set (no gateway with auth on)' }, () => {
  test('topicToken() mints a token that opens that topic\'s events, and nothing else, with only ?access_token', async (t) => {
    const owner = new GatewayClient({ baseUrl: AUTH_URL, headers: { Authorization: `Bearer ${AUTH_TOKEN}` } });
    const stranger = new GatewayClient({ baseUrl: AUTH_URL, transport: 'fetch' });
    const topic = newRoom();
    let minted;
    try {
      minted = await owner.topicToken(topic);
    } catch (error) {
      // The auth gateway's key may not have the topic scopes (or it serves no topics).
      if (error instanceof GatewayError && [403, 404].includes(error.status)) {
        t.skip(`the auth gateway's key cannot mint subscribe tokens (${error.status} ${error.code})`);
        return;
      }
      throw error;
    }
    assert.equal(typeof minted.token, 'string');
    assert.equal(minted.topic, topic);
    assert.ok(minted.expires_at > Date.now() / 1000, JSON.stringify(minted));
    assert.ok(minted.events.startsWith(`/v1/topics/${topic}/events?access_token=`), minted.events);

    await owner.publish(topic, line(topic, 1));
    await assert.rejects(take(stranger.subscribe(topic, { after: 0, signal: bounded() }), 1), (error) => {
      assert.equal(error.cause?.status, 401, String(error));
      return true;
    });
    const seen = await take(stranger.subscribe(topic, { after: 0, token: minted.token, signal: bounded() }), 1);
    assert.deepEqual(seen.map((m) => m.data), [line(topic, 1)]);

    // One topic only (not even the family), and read-only.
    for (const other of [newRoom(), 'chat.room']) {
      await assert.rejects(take(stranger.subscribe(other, { after: 0, token: minted.token, signal: bounded() }), 1), (error) => {
        assert.ok([401, 403].includes(error.cause?.status), String(error));
        return true;
      });
    }
    const publish = await fetch(`${AUTH_URL}/v1/topics/${topic}?access_token=${encodeURIComponent(minted.token)}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(line(topic, 2)),
    });
    assert.ok([401, 403].includes(publish.status), `a subscribe token published: ${publish.status}`);
  });
});
