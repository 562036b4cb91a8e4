/**
 * The console's shell: which page a path shows (the gateway serves this same document for
 * every path under /console/, so a link such as /console/jobs/<id> can be shared), the
 * gateway client every page uses, the API key people give once (kept in sessionStorage:
 * this tab only, never in a URL), and the broker banner from /readyz.
 *
 * A page is a module exporting `render(ctx, params, signal)`: it fills `ctx.main` and
 * stops whatever it follows (streams, refreshes) when `signal` aborts, i.e. when the
 * person goes to another page.
 */

import { GatewayClient } from '../client/index.js';
import { announce, el, errorBlock } from './ui.js';

const KEY_STORAGE = 'gateway-console-key';
const READY_POLL_MS = 5000;

/** Path patterns (relative to /console/) → the page module and the names of its params. */
const ROUTES = [
  { pattern: /^$/, module: './ops.js', section: 'ops', names: [] },
  { pattern: /^ops\/([^/]+)$/, module: './call.js', section: 'ops', names: ['op'] },
  { pattern: /^jobs$/, module: './jobs.js', section: 'jobs', names: [] },
  { pattern: /^jobs\/([^/]+)$/, module: './job.js', section: 'jobs', names: ['id'] },
  { pattern: /^topics$/, module: './topics.js', section: 'topics', names: [] },
  { pattern: /^topics\/([^/]+)$/, module: './topics.js', section: 'topics', names: ['topic'] },
];

/** Where /console/ is (with any proxy prefix), and the gateway's root beside it. */
const consoleBase = new URL('.', document.baseURI);
const apiBase = new URL('..', consoleBase).href.replace(/\/+$/, '');

const main = document.getElementById('main');
let current = null; // { controller } of the page shown

/** The shared context pages get. `client` is rebuilt when the key changes. */
const ctx = {
  main,
  apiBase,
  consoleBase: consoleBase.href,
  client: null,
  /** `{subject, auth, scopes, token}` from GET /v1/me, or null before it is known. */
  me: null,
  key: sessionStorage.getItem(KEY_STORAGE) ?? '',
  announce,
  /** Go to a console path (relative to /console/, e.g. `jobs/abc`), as a link would. */
  navigate(path, { replace = false } = {}) {
    const url = new URL(path, consoleBase);
    if (replace) history.replaceState(null, '', url);
    else history.pushState(null, '', url);
    show();
  },
  /** A console link (an <a> that the router follows without reloading). */
  href(path) {
    return new URL(path, consoleBase).href;
  },
  setKey(key) {
    ctx.key = key;
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
    ctx.client = makeClient();
    whoAmI().then(show);
  },
};

function makeClient() {
  return new GatewayClient({
    baseUrl: apiBase,
    validate: true,
    headers: ctx.key ? { Authorization: `Bearer ${ctx.key}` } : {},
  });
}

/** The path below /console/, without a trailing slash. */
function consolePath() {
  const path = decodeURI(location.pathname);
  const base = decodeURI(consoleBase.pathname);
  return (path.startsWith(base) ? path.slice(base.length) : '').replace(/\/+$/, '');
}

async function show() {
  current?.controller.abort();
  const controller = new AbortController();
  current = { controller };
  const path = consolePath();
  const route = ROUTES.find((r) => r.pattern.test(path));
  for (const link of document.querySelectorAll('nav a[data-section]')) {
    if (route && link.dataset.section === route.section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  main.replaceChildren();
  if (!route) {
    document.title = 'Not found · Gateway console';
    main.append(el('h1', {}, 'Not found'), el('p', {}, 'The console has no page at this address. ',
      el('a', { href: './', 'data-nav': true }, 'See the operations.')));
    return;
  }
  const match = route.pattern.exec(path);
  const params = Object.fromEntries(route.names.map((name, i) => [name, decodeURIComponent(match[i + 1])]));
  try {
    const page = await import(route.module);
    if (controller.signal.aborted) return;
    await page.render(ctx, params, controller.signal);
  } catch (error) {
    if (controller.signal.aborted) return;
    main.append(errorBlock(error));
  }
}

/** Follow console links without reloading; anything else (and new tabs) as usual. */
document.addEventListener('click', (event) => {
  const link = event.target.closest?.('a[data-nav]');
  if (!link || event.defaultPrevented || event.button !== 0
      || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const url = new URL(link.href);
  if (url.origin !== location.origin || !url.pathname.startsWith(consoleBase.pathname)) return;
  event.preventDefault();
  history.pushState(null, '', url);
  show().then(() => main.focus({ preventScroll: true }));
});
window.addEventListener('popstate', () => { show(); });

/** Who the key is, shown top right with a form to give or forget a key. */
async function whoAmI() {
  const who = document.getElementById('who');
  try {
    ctx.me = await ctx.client.me();
  } catch (error) {
    ctx.me = null;
    if (error?.status !== 401) throw error;
  }
  who.replaceChildren(keyForm());
}

function keyForm() {
  const me = ctx.me;
  if (me && !me.auth) return el('p', { class: 'who-line' }, 'Auth is off: everyone may do everything.');
  if (me && ctx.key) {
    return el('div', { class: 'who-line' },
      el('span', {}, 'Signed in as ', el('code', {}, me.subject ?? 'a token')),
      el('button', { type: 'button', onclick: () => { ctx.setKey(''); announce('Key forgotten'); } }, 'Forget key'));
  }
  const input = el('input', { id: 'api-key', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true });
  return el('form', {
    class: 'who-line',
    onsubmit: (event) => {
      event.preventDefault();
      ctx.setKey(input.value.trim());
      announce('Key set for this tab');
    },
  },
  el('label', { for: 'api-key' }, 'API key or token'), input,
  el('button', { type: 'submit' }, 'Use'));
}

/** The broker banner: /readyz every few seconds; a problem is said, not waited on. */
async function watchReadiness() {
  const banner = document.getElementById('broker');
  let said = null;
  for (;;) {
    let problems = null;
    try {
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), READY_POLL_MS);
      const response = await fetch(`${apiBase}/readyz`, { signal: controller.signal, cache: 'no-store' });
      clearTimeout(timer);
      const body = await response.json().catch(() => ({}));
      if (!response.ok) problems = body.problems ?? { gateway: `readyz answered ${response.status}` };
    } catch {
      problems = { gateway: 'the gateway does not answer' };
    }
    const text = problems
      ? `Not ready: ${Object.entries(problems).map(([part, why]) => `${part}: ${typeof why === 'string' ? why : JSON.stringify(why)}`).join('; ')}. `
        + 'New jobs cannot be accepted until this clears.'
      : null;
    if (text !== said) {
      banner.textContent = text ?? '';
      banner.hidden = !text;
      if (said !== null || text) announce(text ?? 'The gateway is ready again');
      said = text;
    }
    await new Promise((resolve) => { setTimeout(resolve, READY_POLL_MS); });
  }
}

ctx.client = makeClient();
watchReadiness();
whoAmI().catch((error) => { document.getElementById('who').replaceChildren(errorBlock(error)); }).finally(show);
