/**
 * The topics pages: `topics` lists the topic contracts (families of keys such as
 * chat.room.<room>); `topics/<topic>` lets people watch a key live (new messages, or the
 * retained history first) and publish to it from a form built from the family's message
 * schema, with the same publish as curl, Python, JavaScript or Perl.
 */

import { schemaEditor } from './form.js';
import { topicSnippets } from './snippets.js';
import { contractCheck, copyAs, duration, el, errorBlock, problemsText } from './ui.js';

/** Messages kept on screen: older ones go, so a busy topic cannot eat the tab's memory. */
const KEEP = 500;

/**
 * @param {object} ctx the console context (app.js)
 * @param {{topic?: string}} params
 * @param {AbortSignal} signal
 */
export async function render(ctx, { topic }, signal) {
  if (topic === undefined) await list(ctx, signal);
  else await one(ctx, topic, signal);
}

async function list(ctx, signal) {
  document.title = 'Topics · Gateway console';
  ctx.main.append(el('h1', {}, 'Topics'));
  const topics = await ctx.client.topics({ signal });
  if (topics.length === 0) {
    ctx.main.append(el('p', {}, 'The gateway serves no topics: it has no topic contracts.'));
    return;
  }
  ctx.main.append(el('p', {}, 'Each topic is a family of keys; choose one to watch it or publish to it.'),
    el('ul', { class: 'cards' }, topics.map((t) => el('li', { 'data-topic': t.name },
      el('a', { href: `topics/${encodeURIComponent(t.name)}`, 'data-nav': true }, t.name),
      t.description && el('span', { class: 'desc' }, t.description),
      el('span', { class: 'settings' }, retention(t.settings))))));
}

/** How long a topic keeps its messages, from `max_age` ("1D", "12h", seconds) and `max_bytes`. */
function retention(settings = {}) {
  const units = { Y: 'year', M: 'month', D: 'day', h: 'hour', m: 'minute', s: 'second' };
  const age = settings.max_age;
  const match = typeof age === 'string' && /^(\d+)([YMDhms])$/.exec(age);
  const ageText = match ? `${match[1]} ${units[match[2]]}${match[1] === '1' ? '' : 's'}`
    : typeof age === 'number' ? duration(age) : age;
  const bytes = settings.max_bytes;
  const sizeText = bytes && `${Number((bytes / 1e6).toPrecision(3))} MB`;
  const parts = [ageText, sizeText].filter(Boolean);
  return parts.length ? `History kept: up to ${parts.join(' or ')}.` : 'History kept: as RabbitMQ is set.';
}

async function one(ctx, topic, signal) {
  document.title = `${topic} · Gateway console`;
  const topics = await ctx.client.topics({ signal });
  // The family is the longest contract name at or above the key.
  const family = topics.filter((t) => topic === t.name || topic.startsWith(`${t.name}.`))
    .sort((a, b) => b.name.length - a.name.length)[0];
  if (!family) {
    document.title = 'Unknown topic · Gateway console';
    ctx.main.append(el('h1', {}, 'Unknown topic'),
      el('p', {}, 'No topic contract covers ', el('code', {}, topic), '. ',
        el('a', { href: 'topics', 'data-nav': true }, 'See the topics.')));
    return;
  }
  const contract = await ctx.client.topicContract(family.name, { signal });
  const key = el('input', {
    id: 'topic-key', type: 'text', value: topic, autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'topic-key-hint',
  });
  const usual = `${family.name} for every key of the family, or a key below it such as ${family.name}.42.`;
  const keyHint = el('p', { class: 'hint', id: 'topic-key-hint' }, usual);
  /** The key to use, or null (said next to the field) when it is not this family's. */
  const keyOf = () => {
    const value = key.value.trim();
    const ok = value === family.name || (value.startsWith(`${family.name}.`) && !/\.\.|\.$|\s/.test(value));
    key.setAttribute('aria-invalid', String(!ok));
    keyHint.classList.toggle('warn', !ok);
    keyHint.textContent = ok ? usual : `Not a key of ${family.name}: give ${family.name} or a key below it such as ${family.name}.42.`;
    if (!ok) key.focus();
    return ok ? value : null;
  };
  ctx.main.append(
    el('h1', {}, 'Topic ', el('code', {}, family.name)),
    el('p', { class: 'lead' }, contract.description || family.description || ''),
    el('p', { class: 'hint' }, retention(family.settings)),
    el('div', { class: 'field' }, el('label', { for: 'topic-key' }, 'Topic key'), key, keyHint),
    subscribeSection(ctx, keyOf, signal),
    ...await publishSection(ctx, contract, key, keyOf, signal));
}

/** Subscribe / Stop, and the messages as they come (newest at the bottom). */
function subscribeSection(ctx, keyOf, signal) {
  const button = el('button', { type: 'submit' }, 'Subscribe');
  const status = el('p', { class: 'form-status' }, 'Not subscribed.');
  const problem = el('div');
  const messages = el('ol', { class: 'topic-messages' });
  const box = el('div', { class: 'topic-log', role: 'region', 'aria-label': 'Messages received', tabindex: 0 }, messages);
  let running = null; // the AbortController of the subscription, while there is one

  const add = ({ seq, data }) => {
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    messages.append(el('li', { 'data-seq': seq },
      el('p', { class: 'meta' }, el('strong', {}, `#${seq}`), ` received ${new Date().toLocaleTimeString()}`),
      el('pre', { class: 'json' }, JSON.stringify(data, null, 2))));
    while (messages.childElementCount > KEEP) messages.firstElementChild.remove();
    if (atBottom) box.scrollTop = box.scrollHeight;
  };

  const subscribe = async (topic, after) => {
    running = new AbortController();
    const mine = running;
    const stop = AbortSignal.any([signal, mine.signal]);
    button.textContent = 'Stop';
    problem.replaceChildren();
    status.textContent = `Subscribed to ${topic}${after === 0 ? ', from the retained history' : ''}.`;
    ctx.announce(status.textContent);
    try {
      for await (const message of ctx.client.subscribe(topic, { after, signal: stop })) add(message);
    } catch (error) {
      if (!stop.aborted) {
        problem.replaceChildren(errorBlock(error));
        ctx.announce(`Subscription ended: ${error.message}`);
      }
    } finally {
      if (running === mine) {
        running = null;
        button.textContent = 'Subscribe';
        status.textContent = `Not subscribed (was to ${topic}).`;
      }
    }
  };

  const form = el('form', {
    'aria-labelledby': 'topic-subscribe',
    onsubmit: (event) => {
      event.preventDefault();
      if (running) {
        running.abort();
        ctx.announce('Stopped');
        return;
      }
      const topic = keyOf();
      if (topic) subscribe(topic, form.elements.from.value === 'history' ? 0 : undefined);
    },
  },
  el('fieldset', { class: 'choices' }, el('legend', {}, 'From'),
    el('label', {}, el('input', { type: 'radio', name: 'from', value: 'new', checked: true }), 'New messages only'),
    el('label', {}, el('input', { type: 'radio', name: 'from', value: 'history' }), 'The retained history, then new ones')),
  el('div', { class: 'actions' }, button, status));
  return el('section', { 'aria-labelledby': 'topic-subscribe' },
    el('h2', { id: 'topic-subscribe' }, 'Subscribe'), form, problem, box);
}

/** The publish form (the family's message schema) with its answer, and its "Copy as" section. */
async function publishSection(ctx, contract, key, keyOf, signal) {
  const editor = schemaEditor({ root: contract, definition: 'message', check: await contractCheck(contract, 'message'), label: 'Message' });
  const button = el('button', { type: 'submit' }, 'Publish');
  const status = el('p', { class: 'form-status' });
  const answer = el('div');
  const copy = copyAs('publish');
  const update = () => copy.update(topicSnippets({
    apiBase: ctx.apiBase, topic: key.value.trim(), message: editor.value(), auth: !!ctx.me?.auth,
  }));
  editor.onChange(update);
  key.addEventListener('input', update);
  update();

  const form = el('form', {
    'aria-labelledby': 'topic-publish', novalidate: true,
    onsubmit: async (event) => {
      event.preventDefault();
      const topic = keyOf();
      if (!topic) return;
      const problems = editor.details();
      if (problems.length > 0) {
        editor.focusFirstInvalid();
        status.textContent = problemsText(problems.length, 'message');
        ctx.announce(status.textContent);
        return;
      }
      button.disabled = true;
      answer.replaceChildren();
      try {
        const { message_id: id } = await ctx.client.publish(topic, editor.value(), { signal });
        status.replaceChildren(`Published to ${topic}: message id `, el('code', { class: 'message-id' }, id), '.');
        ctx.announce(`Published to ${topic}`);
      } catch (error) {
        if (signal.aborted) return;
        status.textContent = 'Not published: see why below.';
        answer.replaceChildren(errorBlock(error));
        ctx.announce(`Not published: ${error.message}`);
      } finally {
        button.disabled = false;
      }
    },
  },
  editor.element,
  el('div', { class: 'actions' }, button, status));
  return [el('section', { 'aria-labelledby': 'topic-publish' },
    el('h2', { id: 'topic-publish' }, 'Publish'), form, answer), copy.element];
}
