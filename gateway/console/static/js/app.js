/**
 * The console's shell: which page a path shows (the gateway serves this same document for
 * every path under /console/, so a link such as /console/jobs/<id> can be shared), the
 * gateway client every page uses, the API key people give once (kept in sessionStorage:
 * this tab only, never in a URL) with who it is and what it may do (GET /v1/me), and the
 * broker banner from /readyz.
 *
 * A page is a module exporting `render(ctx, params, signal)`: it fills `ctx.main`, resolves
 * once the page is drawn (focus moves to it then), and stops whatever it goes on following
 * (streams, refreshes) when `signal` aborts, i.e. when the person goes to another page.
 */

import { GatewayClient } from '../client/index.js';
import { announce, el, errorBlock } from './ui.js';

const KEY_STORAGE = 'gateway-console-key';
const READY_POLL_MS = 5000;
const ME_TIMEOUT_MS = 5000;

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
  /** Use `key` (an API key or token; '' for none) from now on, in this tab only. */
  setKey(key) {
    useKey(key);
    whoAmI().then(show);
  },
};

function useKey(key) {
  ctx.key = key;
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  ctx.client = makeClient();
}

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
    // Every page has one h1, also one that failed before writing its own.
    if (!main.querySelector('h1')) {
      document.title = 'Not available · Gateway console';
      main.append(el('h1', {}, 'This page is not available'));
    }
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
  window.scrollTo(0, 0);
  show().then(() => main.focus({ preventScroll: true }));
});

/* The skip link's "#main" would resolve against <base> (another page): move focus instead. */
document.querySelector('a.skip')?.addEventListener('click', (event) => {
  event.preventDefault();
  main.focus();
});
window.addEventListener('popstate', () => { show(); });

/** Who the key is, and what it may do, shown in the header beside the key form. */
async function whoAmI() {
  const who = document.getElementById('who');
  let problem = null;
  ctx.me = null;
  // The client may not have me() yet; then the console just doesn't know who it is.
  if (typeof ctx.client.me === 'function') {
    try {
      ctx.me = await withTimeout(ctx.client.me(), ME_TIMEOUT_MS);
    } catch (error) {
      if (error?.status === 401 && ctx.key) {
        // A refused key is forgotten, not sent with every request of every page.
        useKey('');
        problem = 'The gateway refused that key: give another.';
      } else if (error?.status !== 401) {
        problem = `Could not tell who you are: ${error?.message ?? error}`;
      }
    }
  }
  who.replaceChildren(keyForm(problem));
}

/** `promise`, or a rejection after `ms`: a slow /v1/me must not hold the page back. */
function withTimeout(promise, ms) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/**
 * What the scopes of GET /v1/me allow, in words: `ops:<op>`/`ops:*`,
 * `topics:publish:<topic>`, `topics:subscribe:<topic>` (`*`: every one).
 * @param {string[]} scopes
 */
function allowed(scopes = []) {
  const names = (prefix) => scopes.filter((s) => s.startsWith(prefix)).map((s) => s.slice(prefix.length));
  const say = (list, all) => (list.includes('*') ? all : list.join(', ') || 'nothing');
  return `May call: ${say(names('ops:'), 'all operations')}; publish: ${say(names('topics:publish:'), 'all topics')}; `
    + `subscribe: ${say(names('topics:subscribe:'), 'all topics')}.`;
}

/** The key form, or who is signed in (and a way to forget the key); `problem` said below. */
function keyForm(problem) {
  const me = ctx.me;
  if (me && !me.auth) return el('p', { class: 'who-line' }, 'Auth is off: everyone may do everything.');
  const forget = el('button', { type: 'button', onclick: () => { ctx.setKey(''); announce('Key forgotten'); } }, 'Forget key');
  if (ctx.key) {
    return el('div', { class: 'who-line' },
      me ? el('p', {}, 'Signed in as ', el('code', {}, me.subject ?? 'a token'), '. ',
        el('span', { class: 'scopes' }, allowed(me.scopes)))
        : el('p', {}, 'A key is set for this tab.'),
      forget,
      problem && el('p', { class: 'warn' }, problem));
  }
  const input = el('input', {
    id: 'api-key', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true,
    'aria-describedby': problem ? 'api-key-problem' : null,
  });
  return el('form', {
    class: 'who-line',
    onsubmit: (event) => {
      event.preventDefault();
      ctx.setKey(input.value.trim());
      announce('Key set for this tab');
    },
  },
  el('label', { for: 'api-key' }, 'API key or token'), input,
  el('button', { type: 'submit' }, 'Use'),
  problem && el('p', { id: 'api-key-problem', class: 'warn' }, problem));
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
whoAmI().finally(show);
