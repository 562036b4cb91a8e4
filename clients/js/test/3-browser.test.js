/**
 * The client in real Chromium (Debian's, through playwright-core): the conformance vectors
 * run in the page, and the example page (examples/browser/) shows a report's progress live,
 * then its result, even when its connection to the gateway is cut mid-job. Pages are served
 * on GATEWAY_PAGE_ORIGIN, the origin the gateway allows by CORS.
 */

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import Ajv from 'ajv';

import { SSEParser, ajvValidator, parseSSE } from '../src/index.js';
import { conformanceChecks } from './conformance.js';
import {
  GATEWAY_PAGE_ORIGIN, GATEWAY_SCHEMAS, GATEWAY_URL, NEEDS_GATEWAY, REPO_ROOT,
  launchChromium, startProxy, startStaticServer,
} from './support.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const skip = NEEDS_GATEWAY
  || (!GATEWAY_PAGE_ORIGIN && 'GATEWAY_PAGE_ORIGIN is not set')
  || (!existsSync(CHROMIUM) && `no Chromium at ${CHROMIUM} (deploy/install-system-deps.sh chromium)`);

/** Upper limit for anything a page has to show; the tests wait for the DOM, not the clock. */
const PAGE_TIMEOUT_MS = 30_000;

describe('in Chromium', { skip }, () => {
  let browser;
  let site;

  before(async () => {
    site = await startStaticServer(GATEWAY_PAGE_ORIGIN, {
      '/clients/js/src/': join(REPO_ROOT, 'clients/js/src'),
      '/clients/js/test/': join(REPO_ROOT, 'clients/js/test'),
      '/clients/js/node_modules/ajv-dist/dist/': join(REPO_ROOT, 'clients/js/node_modules/ajv-dist/dist'),
      '/examples/browser/': join(REPO_ROOT, 'examples/browser'),
      '/schemas/': GATEWAY_SCHEMAS,
    });
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    await site?.close();
  });

  /** A fresh page whose console errors are kept, to explain a failure. */
  async function openPage(url) {
    const page = await browser.newPage();
    const problems = [];
    page.on('console', (message) => message.type() === 'error' && problems.push(message.text()));
    page.on('pageerror', (error) => problems.push(String(error)));
    await page.goto(url);
    return { page, problems };
  }

  test('the conformance vectors pass in the browser too, with the same checks as in Node', async () => {
    const vectorFiles = (await readdir(join(GATEWAY_SCHEMAS, 'vectors'))).filter((n) => n.endsWith('.json'));
    const load = async (relative) => JSON.parse(await readFile(join(GATEWAY_SCHEMAS, relative), 'utf8'));
    const inNode = await conformanceChecks({ load, vectorFiles, ajvValidator, Ajv, parseSSE, SSEParser });
    const { page, problems } = await openPage(
      `${GATEWAY_PAGE_ORIGIN}/clients/js/test/browser/conformance.html?files=${vectorFiles.join(',')}`,
    );
    await page.waitForFunction(() => window.conformance, null, { timeout: PAGE_TIMEOUT_MS });
    const outcome = await page.evaluate(() => window.conformance);
    assert.equal(outcome.error, undefined, `${outcome.error}\n${problems.join('\n')}`);
    assert.deepEqual(outcome.results.filter((r) => !r.ok), []);
    assert.deepEqual(outcome.results.map((r) => r.name), inNode.map((c) => c.name));
  });

  /**
   * Open the example page against `gatewayUrl`, note in window.timeline the order in which
   * steps and the result appear in the DOM, and start a report of `sections` sections.
   */
  async function startReport(gatewayUrl, sections, secondsPerSection) {
    const opened = await openPage(
      `${GATEWAY_PAGE_ORIGIN}/examples/browser/index.html?gateway=${encodeURIComponent(gatewayUrl)}`,
    );
    const { page } = opened;
    await page.evaluate(() => {
      window.timeline = [];
      const observer = new MutationObserver(() => {
        for (const item of document.querySelectorAll('#steps li')) {
          if (!window.timeline.includes(item.textContent)) window.timeline.push(item.textContent);
        }
        const result = document.querySelector('#result').textContent;
        if (result && !window.timeline.includes('result')) window.timeline.push('result');
      });
      observer.observe(document.body, { subtree: true, childList: true, characterData: true });
    });
    await page.fill('#title', 'Browser report');
    await page.fill('#sections', String(sections));
    await page.fill('#seconds', String(secondsPerSection));
    await page.click('#generate');
    return opened;
  }

  /** The page ended with every step once, in order, then the result. */
  async function assertShowedEveryStepThenResult({ page, problems }, sections) {
    await page.waitForFunction(() => document.querySelector('#result').textContent !== '', null, {
      timeout: PAGE_TIMEOUT_MS,
    }).catch(async (error) => {
      throw new Error(`${error.message}\nstatus: ${await page.textContent('#status')}\n${problems.join('\n')}`);
    });
    const steps = await page.$$eval('#steps li', (items) => items.map((item) => item.textContent));
    const expected = Array.from({ length: sections }, (_, i) => `${i + 1}/${sections} section ${i + 1} written`);
    assert.deepEqual(steps, expected);
    assert.deepEqual(await page.evaluate(() => window.timeline), [...expected, 'result']);
    const result = JSON.parse(await page.textContent('#result'));
    assert.equal(result.title, 'Browser report');
    assert.equal(result.sections.length, sections);
    assert.equal(await page.getAttribute('#status', 'data-state'), 'succeeded');
  }

  test('the example page shows progress live, then the result', async () => {
    const opened = await startReport(GATEWAY_URL, 3, 0.2);
    try {
      await assertShowedEveryStepThenResult(opened, 3);
    } finally {
      await opened.page.close();
    }
  });

  test('the example page survives a dropped connection mid-job (EventSource resumes by Last-Event-ID)', async () => {
    const proxy = await startProxy(GATEWAY_URL);
    const sections = 6;
    const opened = await startReport(proxy.url, sections, 0.5);
    try {
      await opened.page.waitForSelector('#steps li', { timeout: PAGE_TIMEOUT_MS });
      proxy.cut();
      await assertShowedEveryStepThenResult(opened, sections);
      const resumed = proxy.requests.filter((r) => r.path.includes('/events') && r.headers['last-event-id']);
      assert.ok(resumed.length >= 1, `no reconnect with Last-Event-ID: ${JSON.stringify(proxy.requests)}`);
      assert.ok(Number(resumed[0].headers['last-event-id']) >= 3, JSON.stringify(resumed[0]));
    } finally {
      await opened.page.close();
      await proxy.close();
    }
  });
});
