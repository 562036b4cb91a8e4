/**
 * Small DOM helpers every console page uses: building elements (text only ever goes in as
 * text, never as HTML), announcing status changes to screen readers, and showing a
 * gateway error (status, code, message, details) as data rather than as a broken page.
 */

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
  if (status === 401) summary = `Not signed in: ${summary}. Give an API key or token (top right).`;
  else if (status === 403) summary = `Not allowed: ${summary}`;
  else if (status === 0 && code === 'unreachable') summary = `The gateway cannot be reached: ${summary}`;
  const details = Array.isArray(error?.details) ? error.details : [];
  return el('div', { class: 'error', role: 'alert' },
    el('p', {}, el('strong', {}, status ? `${status} ${code ?? ''}`.trim() : (code ?? 'Error')), ': ', summary),
    details.length > 0 && el('ul', { class: 'details' },
      details.map((d) => el('li', {}, el('code', {}, d.path || '(body)'), ' ', d.message))));
}

/** The time of an ISO timestamp as people read it here (locale, with seconds). */
export function when(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}
