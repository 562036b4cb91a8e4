/**
 * Any JSON value as a tree people can read: a job's result, its progress, an event's data
 * are whatever a worker chose, so the console cannot know their shape. Objects and arrays
 * are native <details>/<summary> (keyboard and screen readers work without any script of
 * ours), scalars are styled by type, and a "Copy JSON" button takes the exact value.
 * Deep or big branches start collapsed and are only built when opened, so a 10,000-item
 * result does not freeze the page.
 */

import { announce, el } from './ui.js';

/** Levels open at first; deeper ones start collapsed. */
const OPEN_LEVELS = 2;
/** A branch with more entries than this starts collapsed whatever its level. */
const BIG = 30;
/** Entries built at a time: a longer branch ends with a "Show more" button. */
const PAGE = 200;
/** How much of a collapsed branch its summary previews. */
const PREVIEW_CHARS = 60;

/**
 * An element showing `value` (any JSON value) as a tree, with a "Copy JSON" button.
 * @param {unknown} value
 * @param {{label?: string, open?: number}} [options] `label`: what the value is (the
 *   tree's accessible name; the page's own heading or text says it to the eye); `open`: how
 *   many levels start open (default 2, 0 for a collapsed tree)
 * @returns {HTMLElement}
 */
export function jsonTree(value, { label, open = OPEN_LEVELS } = {}) {
  const said = el('span', { class: 'json-copied' });
  return el('div', { class: 'json-tree', role: 'group', 'aria-label': label ?? 'JSON value' },
    el('div', { class: 'json-bar' },
      // Several trees on a page: the hidden part tells their Copy buttons apart.
      el('button', { type: 'button', class: 'json-copy', onclick: () => copy(value, said) },
        'Copy JSON', label && el('span', { class: 'json-sr' }, ` (${label})`)),
      said),
    node(value, open, 0, null));
}

/** One value: a scalar span, or a <details> branch; `key` (a name or an index) leads it. */
function node(value, open, depth, key) {
  const keyLabel = key === null ? null : el('span', { class: 'json-key' }, String(key));
  if (value === null || typeof value !== 'object') return line(keyLabel, scalar(value));
  const isArray = Array.isArray(value);
  const keys = isArray ? null : Object.keys(value);
  const size = isArray ? value.length : keys.length;
  if (size === 0) return line(keyLabel, el('span', { class: 'json-empty' }, isArray ? '[]' : '{}'));
  const count = isArray ? `[${size} item${size === 1 ? '' : 's'}]` : `{${size} key${size === 1 ? '' : 's'}}`;
  const details = el('details', { class: 'json-branch', open: depth < open && size <= BIG },
    el('summary', {}, keyLabel, el('span', { class: 'json-count' }, count),
      el('span', { class: 'json-preview' }, preview(value))));
  const list = el('ul', { class: isArray ? 'json-array' : 'json-object' });
  let built = 0;
  // After the last page the button hides: the focus goes back to the branch's summary.
  const more = el('button', {
    type: 'button', class: 'json-more',
    onclick: () => { build(); (more.hidden ? details.querySelector('summary') : more).focus(); },
  });
  const build = () => {
    const end = Math.min(size, built + PAGE);
    for (; built < end; built += 1) {
      const name = isArray ? built : keys[built];
      list.append(el('li', {}, node(value[name], open, depth + 1, name)));
    }
    more.hidden = built >= size;
    more.textContent = more.hidden ? '' : `Show more (${size - built} left)`;
  };
  // Built the first time it is open: a collapsed branch costs nothing until then.
  if (details.open) build();
  else details.addEventListener('toggle', () => { if (built === 0) build(); });
  details.append(list, more);
  return details;
}

function line(keyLabel, valueNode) {
  return keyLabel ? el('span', { class: 'json-line' }, keyLabel, valueNode) : valueNode;
}

function scalar(value) {
  const type = value === null ? 'null' : typeof value;
  // JSON's own spelling (quotes around strings) so a "3" is told from a 3 without colour.
  const text = type === 'string' ? `"${value}"` : (type === 'undefined' ? '(none)' : String(value));
  return el('span', { class: `json-${type}` }, text);
}

/** The start of a branch as compact JSON, built without stringifying all of a huge one. */
function preview(value) {
  let text = '';
  const walk = (v) => {
    if (text.length > PREVIEW_CHARS) return;
    if (v === null || typeof v !== 'object') {
      text += JSON.stringify(v) ?? 'null';
      return;
    }
    const isArray = Array.isArray(v);
    text += isArray ? '[' : '{';
    let first = true;
    for (const k of isArray ? v.keys() : Object.keys(v)) {
      if (text.length > PREVIEW_CHARS) break;
      if (!first) text += ', ';
      first = false;
      if (!isArray) text += `${k}: `;
      walk(v[k]);
    }
    text += isArray ? ']' : '}';
  };
  walk(value);
  return text.length > PREVIEW_CHARS ? `${text.slice(0, PREVIEW_CHARS)}…` : text;
}

/** Copy the value as indented JSON; where the clipboard API is missing (plain http), the old way. */
async function copy(value, said) {
  const text = JSON.stringify(value, null, 2) ?? 'null';
  let copied = false;
  try {
    await navigator.clipboard.writeText(text);
    copied = true;
  } catch {
    const back = document.activeElement; // the button: selecting moves focus away
    const area = el('textarea', { readonly: true, style: { position: 'fixed', top: '0', opacity: '0' } }, text);
    document.body.append(area);
    area.select();
    copied = document.execCommand('copy');
    area.remove();
    back?.focus();
  }
  const message = copied ? 'Copied' : 'Could not copy: select the text instead';
  said.textContent = message;
  announce(message);
  setTimeout(() => { if (said.textContent === message) said.textContent = ''; }, 3000);
}
