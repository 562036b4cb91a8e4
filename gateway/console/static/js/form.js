/**
 * The console's schema editor: a form built from a contract's JSON Schema (a request, a
 * topic message) with no code for any one contract, so a new contract needs no console change.
 *
 * What a form cannot hold (`oneOf`, `anyOf`, `not`, `if`, `patternProperties`, type lists,
 * tuples, ...) is a small JSON textarea in place, and the whole value can be edited as JSON.
 * Nothing typed is lost: a value that does not fit its field shows as JSON in its place, and
 * properties without a field go to their object's "Other properties" JSON box, and back.
 *
 * Problems are the API's own details (`check`: the gateway's paths, in its order), in a live
 * summary and beside the field at their JSON pointer: once edited, or all after `details()`.
 */

import { announce, el, uid } from './ui.js';

/** How long typing may pause before the value is checked again. */
const CHECK_DELAY_MS = 150;
/** Keywords a form cannot express: the subtree they are in is edited as JSON. */
const JSON_ONLY = ['oneOf', 'anyOf', 'not', 'if', 'then', 'else', 'patternProperties', 'dependencies',
  'propertyNames', 'contains', 'additionalItems'];
/** `format` → the browser's input type for it. */
const INPUT_TYPES = { email: 'email', uri: 'url', url: 'url', date: 'date', 'date-time': 'datetime-local', time: 'time' };
/** The date-times a datetime-local input can show (others stay text, as they are). */
const DATE_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)?$/i;
const ROOT_NAME = '(top level)';
const FOCUSABLE = 'input:not([disabled]), select, textarea, button:not([disabled])';

/**
 * A schema editor: a generated form, or one JSON textarea, for one definition of a contract.
 * @param {object} options
 * @param {object} options.root        the whole contract document ($refs resolve in it)
 * @param {string} options.definition  'request' (operations) or 'message' (topics)
 * @param {(value: unknown) => Array<{path: string, message: string}>} options.check  the API's validation
 * @param {string} [options.label]     an accessible name for the editor, e.g. 'Request'
 * @returns {{ element: HTMLElement, value(): unknown, setValue(value: unknown): void,
 *             details(): Array<{path: string, message: string}>,
 *             onChange(listener: (value: unknown, details: Array<{path: string, message: string}>) => void): void,
 *             focusFirstInvalid(): void, mode(): 'form' | 'json' }}
 */
export function schemaEditor({ root, definition, check, label = 'Value' }) {
  if (!root?.definitions?.[definition]) throw new Error(`the contract has no definitions.${definition}`);
  const top = { $ref: `#/definitions/${pointer(definition)}` };
  const topShape = describe(root, top, new Set());
  /** What the field builders share: wrapper → {control, box} (where its errors go). */
  const ed = { root, parts: new WeakMap(), touched: new WeakSet(), changed: () => validate() };
  const listeners = [];
  let current = topShape.kind === 'json' ? 'json' : 'form';
  let rootNode = null;
  let showAll = false; // details() was called: show every problem, edited or not
  let timer = null;
  let last = []; // the latest details; local ones (bad JSON) carry their control
  let summaryKey = null;
  let invalid = []; // [control, its aria-describedby before errors were added]

  const formButton = el('button', { type: 'button', class: 'mode-form', onclick: () => switchTo('form') }, 'Form');
  const jsonButton = el('button', { type: 'button', class: 'mode-json', onclick: () => switchTo('json') }, 'JSON');
  const formBox = el('div', { class: 'form-mode' });
  const jsonText = el('textarea', { class: 'json-editor', rows: 12, spellcheck: 'false', autocomplete: 'off' });
  const jsonBox = leafBox(ed, jsonText, `${label} as JSON`, null, topShape.kind === 'json'
    ? `The contract's ${definition} has no form (${topShape.why}): write it as JSON.`
    : 'Any JSON value; switch back to the form to fill it in field by field.');
  jsonBox.classList.add('json-mode');
  const summary = el('div', { class: 'validation-summary', 'aria-live': 'polite' });
  const element = el('div', { class: 'schema-editor' },
    el('div', { class: 'mode-switch', role: 'group', 'aria-label': `Edit the ${label.toLowerCase()} as` }, formButton, jsonButton),
    formBox, jsonBox, summary);

  // A field is touched once edited, not when merely tabbed through: problems appearing on
  // blur would move the button being clicked. Its problems show from then on.
  const touch = (event) => {
    const wrapper = event.target.closest('[data-path]');
    if (wrapper) ed.touched.add(wrapper);
    schedule();
  };
  formBox.addEventListener('input', touch);
  formBox.addEventListener('change', touch);
  jsonText.addEventListener('input', schedule);

  if (current === 'json') {
    formButton.disabled = true;
    jsonText.value = pretty(topShape.schema.default ?? (topShape.schema.type === 'object' ? {} : undefined));
  } else {
    renderForm(undefined);
  }
  showMode();
  validate();

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(validate, CHECK_DELAY_MS);
  }

  /** (Re)build the form from `value`; from the defaults when it is undefined. */
  function renderForm(value) {
    const has = value !== undefined;
    rootNode = buildField(ed, top, { path: '', name: label, keep: true, has, value, defaults: !has, seen: new Set() });
    formBox.replaceChildren(rootNode.element);
    if (formBox.querySelector('.required-mark')) formBox.prepend(el('p', { class: 'form-note' }, 'Fields marked * are required.'));
  }

  function value() {
    return current === 'json' ? parseJSON(jsonText.value).value : orBlank(rootNode);
  }

  /** The details now: local JSON problems first (with their controls), then the API's. */
  function compute() {
    if (current === 'json') {
      const { value: parsed, error } = parseJSON(jsonText.value);
      if (error || parsed === undefined) {
        return [{ path: '', message: error ? `is not valid JSON: ${error}` : 'is empty: write a JSON value', control: jsonText }];
      }
      return check(parsed);
    }
    const local = [];
    for (const box of formBox.querySelectorAll('textarea.json-field, textarea.json-extras')) {
      const extras = box.classList.contains('json-extras');
      const parsed = parseJSON(box.value, extras ? '{}' : '');
      const message = parsed.error ? `is not valid JSON: ${parsed.error}`
        : extras && !isPlainObject(parsed.value) ? 'has other properties that are not a JSON object' : null;
      if (message) local.push({ path: box.closest('[data-path]').dataset.path, message, control: box });
    }
    return [...local, ...check(orBlank(rootNode))];
  }

  function validate() {
    clearTimeout(timer);
    last = compute();
    const list = last.map(({ path, message }) => ({ path, message }));
    const key = JSON.stringify(list);
    if (key !== summaryKey) { // unchanged: say nothing new to screen readers
      summaryKey = key;
      summary.replaceChildren(
        el('p', { class: list.length ? 'summary-status invalid' : 'summary-status' }, list.length
          ? `${plural(list.length, 'problem')} against the contract:` : 'Valid against the contract.'),
        ...(list.length > 0 ? [el('ul', {}, list.map(detailText.bind(null, 'li')))] : []));
    }
    showFieldErrors();
    const now = value();
    for (const listener of listeners) listener(now, list);
    return list;
  }

  /** Each detail beside its field (the nearest one its path is in), once it may show. */
  function showFieldErrors() {
    for (const node of element.querySelectorAll('.field-error')) node.remove();
    for (const [control, before] of invalid) {
      control.removeAttribute('aria-invalid');
      if (before) control.setAttribute('aria-describedby', before);
      else control.removeAttribute('aria-describedby');
    }
    invalid = [];
    for (const detail of last) {
      if (current === 'json' && !detail.control) continue; // the summary has them
      const wrapper = current === 'json' ? jsonBox : wrapperAt(detail.path);
      const own = missingField(detail);
      if (!detail.control && !showAll && !ed.touched.has(wrapper) && !(own && ed.touched.has(own))) continue;
      const { control: fieldControl, box } = ed.parts.get(wrapper);
      const control = detail.control ?? fieldControl;
      const error = detailText('p', detail);
      error.className = 'field-error';
      error.id = uid('error');
      box.append(error);
      const before = control.getAttribute('aria-describedby');
      if (!invalid.some(([c]) => c === control)) invalid.push([control, before]);
      control.setAttribute('aria-describedby', `${before ?? ''} ${error.id}`.trim());
      if (control.tagName !== 'FIELDSET') control.setAttribute('aria-invalid', 'true');
    }
  }

  /** The field of the property that a "must have required property 'x'" detail misses. */
  function missingField({ path, message }) {
    const name = /required property '(.+)'$/.exec(message)?.[1];
    return name === undefined || current === 'json' ? null : fieldAt(`${path}/${pointer(name)}`);
  }

  function fieldAt(path) {
    return formBox.querySelector(`[data-path="${CSS.escape(path)}"]`);
  }

  /** The field wrapper of `path`, or of the nearest path above it that has one. */
  function wrapperAt(path) {
    let p = path;
    while (p && !fieldAt(p)) p = p.slice(0, p.lastIndexOf('/'));
    return fieldAt(p) ?? rootNode.element;
  }

  function switchTo(next) {
    if (next === current) return;
    if (next === 'json') {
      const broken = compute().find((d) => d.control);
      if (broken) return refuse(broken.control, `Fix the JSON at ${broken.path || ROOT_NAME} first: it ${broken.message}.`);
      jsonText.value = pretty(orBlank(rootNode));
    } else {
      const { value: parsed, error } = parseJSON(jsonText.value);
      if (error) return refuse(jsonText, `Not valid JSON, so it cannot go into the form: ${error}`);
      renderForm(parsed);
    }
    current = next;
    showMode();
    validate();
    return announce(next === 'json' ? 'Editing as JSON' : 'Editing with the form');
  }

  /** A switch refused: say why and keep the person at the text to fix. */
  function refuse(control, why) {
    validate();
    control.focus();
    announce(why);
  }

  function showMode() {
    formButton.setAttribute('aria-pressed', String(current === 'form'));
    jsonButton.setAttribute('aria-pressed', String(current === 'json'));
    formBox.hidden = current !== 'form';
    jsonBox.hidden = current !== 'json';
  }

  return {
    element,
    value,
    setValue(next) {
      showAll = false;
      if (current === 'json') jsonText.value = pretty(next);
      else renderForm(next);
      validate();
    },
    details() {
      showAll = true;
      return validate();
    },
    onChange(listener) {
      listeners.push(listener);
    },
    focusFirstInvalid() {
      showAll = true;
      validate();
      const [first] = last;
      if (!first) return;
      if (first.control || current === 'json') {
        (first.control ?? jsonText).focus();
        return;
      }
      // A missing property is reported at its object: go to the property's own field.
      const wrapper = missingField(first) ?? wrapperAt(first.path);
      const { control } = ed.parts.get(wrapper);
      (control === wrapper ? wrapper.querySelector(FOCUSABLE) : control)?.focus();
    },
    mode: () => current,
  };
}

// --- schemas

/**
 * The field `schema` gets: `{kind, schema, seen, why}`, `$ref`s followed (`seen`: those on
 * the way here, so recursion stops) and `allOf` merged; kind `json`, with `why`, if no form fits.
 */
function describe(root, input, seen) {
  const chain = new Set(seen);
  let schema = input;
  const json = (why) => ({ kind: 'json', schema: isPlainObject(schema) ? schema : {}, seen: chain, why });
  while (isPlainObject(schema) && typeof schema.$ref === 'string') {
    if (chain.has(schema.$ref)) return json(`${schema.$ref} contains itself`);
    chain.add(schema.$ref);
    schema = resolvePointer(root, schema.$ref); // draft-07: a $ref's siblings are ignored
  }
  if (schema === false) return json('no value is allowed here');
  if (!isPlainObject(schema)) schema = {};
  if (Array.isArray(schema.allOf)) {
    const merged = mergeAllOf(root, schema, chain);
    if (!merged) return json('allOf combines different shapes here');
    schema = merged;
  }
  const keyword = JSON_ONLY.find((k) => k in schema);
  if (keyword) return json(`the contract uses ${keyword} here`);
  if (Array.isArray(schema.type)) return json('several types are allowed here');
  if (Array.isArray(schema.items)) return json('each position has its own schema');
  if (isPlainObject(schema.additionalProperties) && Object.keys(schema.additionalProperties).length) {
    return json('other properties have a schema here');
  }
  const shape = (kind) => ({ kind, schema, seen: chain });
  if ('const' in schema) return shape('const');
  if (Array.isArray(schema.enum)) {
    return schema.enum.every((v) => v === null || typeof v !== 'object') ? shape('enum') : json('its choices are not plain values');
  }
  const type = schema.type ?? (schema.properties ? 'object' : schema.items ? 'array' : undefined);
  if (type === 'null') return { kind: 'const', schema: { ...schema, const: null }, seen: chain };
  if (type === 'object' && !Object.keys(schema.properties ?? {}).length) return json('any JSON object');
  return ['string', 'number', 'integer', 'boolean', 'object', 'array'].includes(type) ? shape(type) : json('any JSON value');
}

/**
 * `schema` and its `allOf` parts as one, if no keyword has two values (titles aside); else
 * null. A property in several parts gets an `allOf` of its schemas, merged when built.
 */
function mergeAllOf(root, schema, chain) {
  const { allOf, ...rest } = schema;
  const merged = {};
  for (let part of [rest, ...allOf]) {
    while (isPlainObject(part) && typeof part.$ref === 'string' && !chain.has(part.$ref)) {
      chain.add(part.$ref);
      part = resolvePointer(root, part.$ref);
    }
    if (part === true) continue;
    // additionalProperties in one part would refuse the others' properties.
    if (!isPlainObject(part) || '$ref' in part || 'additionalProperties' in part) return null;
    if (Array.isArray(part.allOf)) part = mergeAllOf(root, part, chain);
    if (!part || JSON_ONLY.some((k) => k in part)) return null;
    for (const [key, value] of Object.entries(part)) {
      if (key === 'properties') {
        merged.properties ??= {};
        for (const [name, sub] of Object.entries(value)) {
          merged.properties[name] = name in merged.properties ? { allOf: [merged.properties[name], sub] } : sub;
        }
      } else if (key === 'required') {
        merged.required = [...new Set([...(merged.required ?? []), ...value])];
      } else if (!(key in merged) || key === 'title' || key === 'description') {
        merged[key] ??= value;
      } else if (JSON.stringify(merged[key]) !== JSON.stringify(value)) {
        return null;
      }
    }
  }
  return merged;
}

function resolvePointer(root, ref) {
  if (!ref.startsWith('#')) throw new Error(`only local $refs resolve in the console, not ${ref}`);
  let node = root;
  for (const raw of ref.slice(1).split('/').slice(1)) {
    const key = decodeURIComponent(raw).replaceAll('~1', '/').replaceAll('~0', '~');
    if (!isPlainObject(node) || !Object.hasOwn(node, key)) throw new Error(`$ref ${ref} points nowhere`);
    node = node[key];
  }
  return node;
}

/** Whether a field of each kind can hold `v` as it is (if not, the field is JSON). */
const FITS = {
  string: (v) => typeof v === 'string',
  number: Number.isFinite,
  integer: Number.isFinite,
  boolean: (v) => typeof v === 'boolean',
  enum: (v, s) => s.enum.includes(v),
  const: (v, s) => JSON.stringify(v) === JSON.stringify(s.const),
  object: isPlainObject,
  array: Array.isArray,
  json: () => true,
};

// --- fields

/**
 * A field: `{element, title, read, blank}`: its wrapper (with data-path), label or legend,
 * `read()` (undefined when empty: left out), and its value when empty where one is needed.
 * `field`: `{path, name, has, value, defaults, seen}`, and `required` (marked; an object or
 * array is then always sent, as is one given even empty) or `keep` (the root, an item).
 */
function buildField(ed, schema, field) {
  const { kind, schema: s, seen, why } = describe(ed.root, schema, field.seen);
  const g = { ...field, kind, schema: s, seen, why };
  if (!g.has && g.defaults && s.default !== undefined) Object.assign(g, { has: true, value: structuredClone(s.default) });
  if (g.has && !FITS[kind](g.value, s)) Object.assign(g, { kind: 'json', why: 'its value does not fit the form' });
  return BUILDERS[g.kind](ed, g);
}

const BUILDERS = {
  string: stringField, number: numberField, integer: numberField, boolean: booleanField, enum: enumField,
  const: constField, object: objectField, array: arrayField, json: jsonField,
};

/** A field's value, or its blank where a value is needed (the root, an array item). */
function orBlank(node) {
  const v = node.read();
  return v === undefined ? node.blank : v;
}

function stringField(ed, g) {
  const s = g.schema;
  const text = g.has ? g.value : '';
  // An input drops line breaks: a text with some gets a textarea.
  const control = /[\r\n]/.test(text) ? el('textarea', { rows: 4 })
    : el('input', { type: INPUT_TYPES[s.format] ?? 'text', step: /time/.test(s.format) ? 1 : null });
  // HTML anchors a pattern; a schema's may match anywhere in the text.
  if (typeof s.pattern === 'string' && control.type !== 'textarea') control.setAttribute('pattern', `.*(?:${s.pattern}).*`);
  if (Number.isInteger(s.minLength)) control.setAttribute('minlength', s.minLength);
  if (Number.isInteger(s.maxLength)) control.setAttribute('maxlength', s.maxLength);
  control.required = Boolean(g.required);
  const local = control.type === 'datetime-local';
  control.value = local ? toLocalDateTime(text) : text;
  // A text this input type cannot show as it is (a date that is not one) stays text.
  if (control.type !== 'textarea' && (local ? !control.value && text : control.value !== text)) {
    control.type = 'text';
    control.value = text;
  }
  // An empty text that was given (setValue, the JSON editor) is sent until edited.
  let givenEmpty = g.has && !text;
  control.addEventListener('input', () => { givenEmpty = false; });
  return leaf(ed, g, control, {
    read: () => (control.value ? fromControl(control) : givenEmpty ? '' : undefined),
    blank: '',
  });
}

function numberField(ed, g) {
  const s = g.schema;
  const integer = g.kind === 'integer';
  const number = (x) => typeof x === 'number';
  // For whole numbers an exclusive bound is an inclusive one; for others the hint says it.
  const control = el('input', {
    type: 'number',
    inputmode: integer ? 'numeric' : 'decimal',
    step: s.multipleOf ?? (integer ? 1 : 'any'),
    min: number(s.minimum) ? s.minimum : integer && number(s.exclusiveMinimum) ? Math.floor(s.exclusiveMinimum) + 1 : null,
    max: number(s.maximum) ? s.maximum : integer && number(s.exclusiveMaximum) ? Math.ceil(s.exclusiveMaximum) - 1 : null,
    required: Boolean(g.required),
  });
  if (g.has) control.value = String(g.value);
  return leaf(ed, g, control, { read: () => (control.value === '' ? undefined : Number(control.value)), blank: null });
}

function booleanField(ed, g) {
  const control = el('input', { type: 'checkbox', checked: g.has && g.value });
  // An optional flag nobody set is left out: half-ticked until it is ticked or unticked.
  let unset = !g.has && !g.required && !g.keep;
  control.indeterminate = unset;
  control.addEventListener('change', () => { unset = false; });
  return leaf(ed, g, control, {
    inline: true,
    note: unset && 'Left out until you tick or untick it.',
    read: () => (unset ? undefined : control.checked),
    blank: false,
  });
}

function enumField(ed, g) {
  const choices = g.schema.enum;
  const chosen = g.has ? choices.indexOf(g.value) : -1;
  const needed = g.required || g.keep;
  const control = el('select', { required: Boolean(g.required) },
    (chosen < 0 || !needed) && el('option', { value: '' }, needed ? 'Choose…' : '(not set)'),
    choices.map((choice, i) => el('option', { value: String(i) }, typeof choice === 'string' ? choice : JSON.stringify(choice))));
  control.value = chosen < 0 ? '' : String(chosen);
  return leaf(ed, g, control, { read: () => (control.value ? choices[Number(control.value)] : undefined), blank: null });
}

function constField(ed, g) {
  const constant = g.schema.const;
  if (g.required || g.keep) {
    const control = el('input', { type: 'text', readonly: true, value: typeof constant === 'string' ? constant : JSON.stringify(constant) });
    return leaf(ed, g, control, { note: 'Fixed by the contract.', read: () => constant, blank: constant });
  }
  // Optional: sent or not; its value is fixed.
  const control = el('input', { type: 'checkbox', checked: g.has });
  return leaf(ed, g, control, {
    inline: true,
    note: `Sends ${JSON.stringify(constant)} when ticked.`,
    read: () => (control.checked ? constant : undefined),
    blank: constant,
  });
}

function jsonField(ed, g) {
  const text = g.has ? pretty(g.value) : '';
  const rows = Math.min(12, Math.max(2, text.split('\n').length));
  const control = el('textarea', { class: 'json-field', spellcheck: 'false', autocomplete: 'off', rows });
  control.value = text;
  return leaf(ed, g, control, {
    suffix: ' (JSON)', note: `As JSON: ${g.why}.`, read: () => parseJSON(control.value).value, blank: null,
  });
}

/** A field with one control: label, hint (its aria-describedby), control, errors. */
function leaf(ed, g, control, { inline = false, note = '', suffix = '', read, blank }) {
  if (g.required) control.setAttribute('aria-required', 'true');
  const element = leafBox(ed, control, [g.name, suffix, requiredMark(g)], g.path, hintText(g, note), inline);
  return { element, title: element.querySelector('label'), read, blank };
}

function leafBox(ed, control, name, path, hint, inline = false) {
  control.id = uid('field');
  const help = hint && el('p', { class: 'hint', id: uid('hint') }, hint);
  if (help) control.setAttribute('aria-describedby', help.id);
  const title = el('label', { for: control.id, id: uid('label') }, name);
  const box = el('div', { class: 'field-errors' });
  const element = el('div', { class: inline ? 'field inline' : 'field', dataset: path === null ? null : { path } },
    inline ? [el('div', { class: 'check' }, control, title), help] : [title, help, control], box);
  ed.parts.set(element, { control, box });
  return element;
}

/** A fieldset for an object or an array: legend, hint, errors, then `children`. */
function group(ed, g, children) {
  const hint = hintText(g, '');
  const help = hint && el('p', { class: 'hint', id: uid('hint') }, hint);
  const title = el('legend', { id: uid('legend') }, g.name, requiredMark(g));
  const box = el('div', { class: 'field-errors' });
  const element = el('fieldset', { class: `field ${g.kind}`, dataset: { path: g.path }, 'aria-describedby': help?.id },
    title, help, box, children);
  ed.parts.set(element, { control: element, box });
  return { element, title };
}

function objectField(ed, g) {
  const { properties, required = [], additionalProperties } = g.schema;
  const given = g.has ? g.value : {};
  const children = Object.entries(properties).map(([name, sub]) => [name, buildField(ed, sub, {
    path: `${g.path}/${pointer(name)}`, name, required: required.includes(name),
    has: Object.hasOwn(given, name), value: given[name], defaults: g.defaults, seen: g.seen,
  })]);
  const extras = Object.fromEntries(Object.entries(given).filter(([name]) => !Object.hasOwn(properties, name)));
  const others = additionalProperties !== false || Object.keys(extras).length ? otherProperties(extras) : null;
  const { element, title } = group(ed, g, [children.map(([, node]) => node.element), others?.element]);
  const read = () => {
    const out = {};
    for (const [name, node] of children) {
      const v = node.read();
      if (v !== undefined) out[name] = v;
    }
    // Properties without a field come back too (a filled field wins over its namesake).
    for (const [name, v] of Object.entries(others?.read() ?? {})) if (!Object.hasOwn(out, name)) out[name] = v;
    return Object.keys(out).length || g.required || g.keep || g.has ? out : undefined;
  };
  return { element, title, read, blank: {} };
}

/** An object's "Other properties" JSON box: the properties without a field. */
function otherProperties(extras) {
  const text = Object.keys(extras).length ? pretty(extras) : '';
  const control = el('textarea', { id: uid('field'), class: 'json-extras', rows: 3, spellcheck: 'false', autocomplete: 'off' });
  control.value = text;
  const element = el('details', { class: 'extras', open: Boolean(text) }, el('summary', {}, 'Other properties'),
    el('label', { for: control.id }, 'Other properties, as a JSON object'), control);
  const read = () => {
    const { value } = parseJSON(control.value);
    return isPlainObject(value) ? value : {};
  };
  return { element, read };
}

function arrayField(ed, g) {
  const s = g.schema;
  const { minItems = 0, maxItems = Infinity } = s;
  const items = []; // { node, remove }
  const list = el('ol', { class: 'items' });
  const add = el('button', { type: 'button', class: 'add' }, 'Add');
  const { element, title } = group(ed, g, [list, add]);
  add.setAttribute('aria-describedby', title.id);

  const insert = (value, has) => {
    // The path from the DOM: this array may have been renumbered since it was built.
    const node = buildField(ed, s.items ?? {}, {
      path: `${element.dataset.path}/${items.length}`, name: `Item ${items.length + 1}`, keep: true, has, value, defaults: !has, seen: g.seen,
    });
    const item = { node, remove: el('button', { type: 'button', class: 'remove', 'aria-describedby': node.title.id }, 'Remove') };
    item.remove.addEventListener('click', () => drop(item));
    node.element.append(item.remove);
    list.append(el('li', {}, node.element));
    items.push(item);
  };
  const limit = () => {
    add.disabled = items.length >= maxItems;
    for (const { remove } of items) remove.disabled = items.length <= minItems;
  };
  const drop = (item) => {
    const index = items.indexOf(item);
    item.node.element.parentElement.remove();
    items.splice(index, 1);
    items.forEach((other, i) => { if (i >= index) renumber(other.node, `${element.dataset.path}/${i}`, i); });
    limit();
    const next = items[index] ?? items[index - 1];
    (next ? next.node.element.querySelector(FOCUSABLE) : add).focus();
    announce(`Item ${index + 1} removed from ${g.name}`);
    ed.touched.add(element);
    ed.changed();
  };
  add.addEventListener('click', () => {
    insert(undefined, false);
    limit();
    items.at(-1).node.element.querySelector(FOCUSABLE).focus();
    announce(`Item ${items.length} added to ${g.name}`);
    ed.changed();
  });

  if (g.has) for (const v of g.value) insert(v, true);
  else if (g.required || g.keep) for (let i = 0; i < minItems; i += 1) insert(undefined, false);
  limit();
  const read = () => (items.length || g.required || g.keep || g.has ? items.map(({ node }) => orBlank(node)) : undefined);
  return { element, title, read, blank: [] };
}

/** An array item moved to `index`: its paths (and those inside it) and its label follow. */
function renumber(node, path, index) {
  const old = node.element.dataset.path;
  for (const wrapper of [node.element, ...node.element.querySelectorAll('[data-path]')]) {
    const p = wrapper.dataset.path;
    if (p === old || p.startsWith(`${old}/`)) wrapper.dataset.path = path + p.slice(old.length);
  }
  node.title.firstChild.textContent = `Item ${index + 1}`;
}

// --- small helpers

/** A field's hint: title, description, its rules in words, and a note. */
function hintText({ schema: s, kind }, note) {
  const rules = [];
  const add = (test, text) => test && rules.push(text);
  if (kind === 'string') {
    add(s.minLength && s.maxLength === undefined, `at least ${plural(s.minLength, 'character')}`);
    add(!s.minLength && s.maxLength !== undefined, `at most ${plural(s.maxLength, 'character')}`);
    add(s.minLength && s.maxLength !== undefined, `${s.minLength} to ${s.maxLength} characters`);
    add(s.format, `format ${s.format}`);
    add(s.pattern, `matching ${s.pattern}`);
  }
  if (kind === 'number' || kind === 'integer') {
    add(kind === 'integer', 'a whole number');
    for (const [key, sign] of [['minimum', '≥'], ['exclusiveMinimum', '>'], ['maximum', '≤'], ['exclusiveMaximum', '<']]) {
      add(typeof s[key] === 'number', `${sign} ${s[key]}`);
    }
    add(s.multipleOf, `a multiple of ${s.multipleOf}`);
  }
  if (kind === 'array') {
    add(s.minItems, `at least ${plural(s.minItems, 'item')}`);
    add(s.maxItems !== undefined, `at most ${plural(s.maxItems, 'item')}`);
    add(s.uniqueItems, 'no two alike');
  }
  add(s.default !== undefined && kind !== 'object' && kind !== 'array', `default ${JSON.stringify(s.default)}`);
  return [s.title, s.description, rules.join(', '), note].filter(Boolean)
    .map((part) => (/[.!?:]$/.test(part) ? part : `${part}.`)).join(' ');
}

/** `<tag><code>path</code> message</tag>`: a detail as the summary and the fields show it. */
function detailText(tag, { path, message }) {
  return el(tag, {}, el('code', {}, path || ROOT_NAME), ' ', message);
}

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

function requiredMark(g) {
  return g.required && el('span', { class: 'required-mark', 'aria-hidden': 'true' }, ' *');
}

/** A datetime-local input's value → an RFC 3339 date-time in UTC; others as typed. */
function fromControl(control) {
  return control.type === 'datetime-local' ? new Date(control.value).toISOString().replace('.000Z', 'Z') : control.value;
}

/** An RFC 3339 date-time → a datetime-local input's value, in local time ('' if not one). */
function toLocalDateTime(text) {
  const d = new Date(text);
  if (!DATE_TIME.test(text) || Number.isNaN(d.getTime())) return '';
  const two = (n) => String(n).padStart(2, '0');
  const ms = d.getMilliseconds() ? `.${String(d.getMilliseconds()).padStart(3, '0')}` : '';
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())}T${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}${ms}`;
}

/** `{value}` of a JSON text (undefined when blank, unless `empty` stands in), or `{error}`. */
function parseJSON(text, empty = '') {
  const source = text.trim() || empty;
  try {
    return { value: source ? JSON.parse(source) : undefined };
  } catch (error) {
    return { error: error.message };
  }
}

function pretty(value) {
  return value === undefined ? '' : JSON.stringify(value, null, 2);
}

function isPlainObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** A property name as a JSON pointer segment. */
function pointer(name) {
  return name.replaceAll('~', '~0').replaceAll('/', '~1');
}
