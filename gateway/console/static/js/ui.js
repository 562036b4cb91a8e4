/**
 * Small DOM helpers every console page uses: building elements (text only ever goes in as
 * text, never as HTML), announcing status changes to screen readers, showing a gateway
 * error (status, code, message, details) as data rather than as a broken page, and the
 * pieces two pages share (durations, an operation's settings, checking a form against its
 * contract, the "Copy as" tabs).
 */

import { ajvValidator } from '../client/index.js';

/**
 * An element: `el('p', { class: 'hint', 'aria-live': 'polite' }, 'text', child, …)`.
 * Attributes whose value is null, undefined or false are left out; `true` sets them empty.
 * Keys starting with `on` add listeners; `dataset` and `style` take objects.
 * @param {string} tag
 * @param {Record<string, any>} [attributes]
 * @param {...(Node | string | number | null | undefined | false)} children
 * @returns {HTMLElement}
 */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      node.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === 'dataset' || name === 'style') {
      Object.assign(node[name], value);
    } else if (name in node && typeof value !== 'string' && name !== 'list') {
      node[name] = value;
    } else {
      node.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Say `text` to screen readers (the page's one polite live region). */
export function announce(text) {
  const region = document.getElementById('announcer');
  if (!region) return;
  // Emptied first, so saying the same thing twice is still said.
  region.textContent = '';
  setTimeout(() => { region.textContent = text; }, 50);
}

/** A unique id for tying a label or a description to its input. */
let counter = 0;
export function uid(prefix = 'c') {
  counter += 1;
  return `${prefix}-${counter}`;
}

/**
 * A gateway error (a GatewayError of the JS client, or any Error) as a block people can
 * read: what happened, its status and code, and each detail with its path.
 * @param {any} error
 * @returns {HTMLElement}
 */
export function errorBlock(error) {
  const status = error?.status;
  const code = error?.code;
  let summary = error?.message ?? String(error);
  if (status === 401) summary = `Not signed in: ${summary}. Give an API key or token in the form at the top of the page.`;
  else if (status === 403) summary = `Not allowed: ${summary}`;
  else if (status === 0 && code === 'unreachable') summary = `The gateway cannot be reached: ${summary}`;
  const details = Array.isArray(error?.details) ? error.details : [];
  // The key form is in the header, far from a long page's error: a way to it.
  const keyInput = status === 401 && document.getElementById('api-key');
  return el('div', { class: 'error', role: 'alert' },
    el('p', {}, el('strong', {}, status ? `${status} ${code ?? ''}`.trim() : (code ?? 'Error')), ': ', summary),
    details.length > 0 && el('ul', { class: 'details' },
      details.map((d) => el('li', {}, el('code', {}, d.path || '(body)'), ' ', d.message))),
    keyInput && el('button', { type: 'button', onclick: () => keyInput.focus() }, 'Go to the key form'));
}

/** The time of an ISO timestamp as people read it here (locale, with seconds). */
export function when(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

/**
 * Wait `ms`, or less if `signal` aborts (it resolves then too: loops check the signal).
 * @param {number} ms
 * @param {AbortSignal} [signal]
 * @returns {Promise<void>}
 */
export function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) { resolve(); return; }
    const done = () => { clearTimeout(timer); signal?.removeEventListener('abort', done); resolve(); };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done);
  });
}

/**
 * A duration for people: "120 ms", "2.5 s", "4 min", "3 h", "7 d".
 * @param {number | null | undefined} s seconds
 */
export function duration(s) {
  if (s === null || s === undefined) return '—';
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  const [unit, size] = [['d', 86400], ['h', 3600], ['min', 60]].find(([, n]) => s >= n) ?? ['s', 1];
  return `${round(s / size)} ${unit}`;
}

/** At most 3 significant digits, no trailing zeros. */
export function round(n) {
  return String(Number(n.toPrecision(3)));
}

/**
 * An operation's settings (`settings` of GET /v1/ops, `x-gateway` of its contract) as
 * [name, value] pairs, the ones people choose by first.
 * @param {Record<string, any>} settings
 * @returns {Array<[string, string]>}
 */
export function settingPairs(settings = {}) {
  return [
    ['Durability', settings.durability ?? 'durable'],
    ['Deadline', settings.deadline_seconds ? duration(settings.deadline_seconds) : 'none'],
    ['Lease', duration(settings.lease_seconds)],
    ['Kept after it ends', duration(settings.retention_seconds)],
    ['Queue limit', settings.max_queue_length === undefined ? '—' : `${settings.max_queue_length} jobs`],
  ];
}

/**
 * The check a schema editor runs: the JS client's Ajv validator (window.ajv7) on one
 * definition of `contract`, giving the gateway's details in its order; none without Ajv
 * (the gateway checks anyway).
 * @param {object} contract
 * @param {'request' | 'message'} definition
 */
export async function contractCheck(contract, definition) {
  return window.ajv7 ? ajvValidator(window.ajv7)(contract, definition) : () => [];
}

/**
 * What to say when a form is sent with problems: "2 problems in the request: fix them first."
 * @param {number} count
 * @param {string} what
 */
export function problemsText(count, what) {
  return count === 1 ? `1 problem in the ${what}: fix it first.` : `${count} problems in the ${what}: fix them first.`;
}

const LANGUAGES = [['curl', 'curl'], ['python', 'Python'], ['javascript', 'JavaScript'], ['perl', 'Perl']];
let chosenLanguage = 'curl'; // kept while the tab lives: people mostly stay with one

/**
 * The "Copy as" section: tabs for curl, Python, JavaScript and Perl, each a
 * `<pre class="snippet" data-lang>` with a Copy button. `update(snippets)` takes what
 * snippets.js made ({curl, python, javascript, perl}).
 * @param {string} what what the snippets do, for the section's hint
 * @returns {{element: HTMLElement, update(snippets: Record<string, string>): void}}
 */
export function copyAs(what) {
  const headingId = uid('copy-as');
  const tabs = [];
  const pres = {};
  const panels = {};
  const select = (lang, focus = false) => {
    chosenLanguage = lang;
    for (const tab of tabs) {
      const on = tab.dataset.lang === lang;
      tab.setAttribute('aria-selected', String(on));
      tab.tabIndex = on ? 0 : -1;
      panels[tab.dataset.lang].hidden = !on;
      if (on && focus) tab.focus();
    }
  };
  for (const [lang, name] of LANGUAGES) {
    const tabId = uid('tab');
    const panelId = uid('panel');
    pres[lang] = el('pre', { class: 'snippet', 'data-lang': lang });
    tabs.push(el('button', {
      type: 'button', role: 'tab', id: tabId, 'aria-controls': panelId, dataset: { lang },
      onclick: () => select(lang),
    }, name));
    panels[lang] = el('div', { role: 'tabpanel', id: panelId, 'aria-labelledby': tabId, class: 'snippet-panel' },
      el('button', { type: 'button', onclick: () => copy(pres[lang]) }, 'Copy'),
      pres[lang]);
  }
  // Arrow keys move between tabs (the ARIA tabs pattern); Tab goes on to the panel.
  const list = el('div', {
    role: 'tablist', 'aria-labelledby': headingId, class: 'tabs',
    onkeydown: (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      event.preventDefault();
      const at = LANGUAGES.findIndex(([lang]) => lang === chosenLanguage);
      select(LANGUAGES[(at + step + LANGUAGES.length) % LANGUAGES.length][0], true);
    },
  }, tabs);
  const element = el('section', { class: 'copy-as', 'aria-labelledby': headingId },
    el('h2', { id: headingId }, 'Copy as'),
    el('p', { class: 'hint' }, `The same ${what} from a shell or a program, as the form is now.`),
    list, Object.values(panels));
  select(chosenLanguage);
  return {
    element,
    update(snippets) {
      for (const [lang] of LANGUAGES) pres[lang].textContent = snippets?.[lang] ?? '';
    },
  };
}

/** Copy a snippet; where the clipboard API is missing (plain http), select it and try the old way. */
async function copy(pre) {
  try {
    await navigator.clipboard.writeText(pre.textContent);
    announce('Copied');
    return;
  } catch {
    // fall back below
  }
  const range = document.createRange();
  range.selectNodeContents(pre);
  getSelection().removeAllRanges();
  getSelection().addRange(range);
  announce(document.execCommand('copy') ? 'Copied' : 'The snippet is selected: press Ctrl+C to copy it');
}
