/**
 * Where a body breaks a schema, reported exactly as the gateway reports it (paths and their
 * order; messages are this client's own). Ajv decides *whether* a body is valid; this walk
 * names the places the way Python's jsonschema does, which Ajv's error list cannot: Ajv
 * lists the failed branches of an `anyOf` beside the `anyOf` itself (a `$ref` hides which
 * errors were branches), adds an `if` error to the `then` ones, and gives one error per
 * unexpected property.
 *
 * The rule, the same in the gateway (gateway/contracts.py `validation_details`), the Perl
 * client and here:
 * - one detail per failing keyword, at the instance it is about: a missing or unexpected
 *   property at the object (`/items/1`, one detail for all unexpected ones), a failed
 *   `anyOf`/`oneOf`/`not`/`contains` once at its instance (not its branches' errors);
 *   `allOf`, `$ref`, `if`/`then`/`else`, `properties`, `items`, ... report their
 *   subschemas' errors;
 * - at most MAX_ERRORS_EXAMINED errors are looked at (in the walk's order: schema keywords
 *   in document order, array items by index, like jsonschema), then sorted most relevant
 *   first: shallower paths first, then document order (segment by segment: array indices
 *   as numbers, names by code point), then at one place weak keywords (`anyOf`, `oneOf`)
 *   last; at most MAX_DETAILS are kept.
 */

export const MAX_ERRORS_EXAMINED = 100;
export const MAX_DETAILS = 20;
const WEAK_KEYWORDS = new Set(['anyOf', 'oneOf']);
const INDEX = /^(0|[1-9][0-9]*)$/;

/**
 * The details of `data` against `schema` (a subschema of `root`, which `$ref`s resolve in).
 * @param {unknown} schema
 * @param {unknown} data
 * @param {object} [root]
 * @returns {Array<{path: string, message: string}>}
 */
export function validationDetails(schema, data, root = /** @type {object} */ (schema)) {
  const examined = [];
  for (const error of walk(schema, data, [], root)) {
    examined.push(error);
    if (examined.length === MAX_ERRORS_EXAMINED) break; // the rest is never computed
  }
  const keyed = examined.map((error, index) => ({ error, index }));
  keyed.sort((x, y) => compareErrors(x.error, y.error) || x.index - y.index);
  return keyed.slice(0, MAX_DETAILS).map(({ error }) => ({ path: pointer(error.path), message: error.message }));
}

/** The detail order (see above); 0 for errors the rule does not tell apart. */
function compareErrors(a, b) {
  if (a.path.length !== b.path.length) return a.path.length - b.path.length;
  for (let i = 0; i < a.path.length; i += 1) {
    const order = compareSegments(String(a.path[i]), String(b.path[i]));
    if (order !== 0) return order;
  }
  return Number(WEAK_KEYWORDS.has(a.keyword)) - Number(WEAK_KEYWORDS.has(b.keyword));
}

function compareSegments(a, b) {
  const aIndex = INDEX.test(a);
  const bIndex = INDEX.test(b);
  if (aIndex && bIndex) return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
  if (aIndex !== bIndex) return aIndex ? -1 : 1;
  // By code point, as Python and Perl compare strings (JS's < compares UTF-16 units).
  const aPoints = Array.from(a, (c) => c.codePointAt(0));
  const bPoints = Array.from(b, (c) => c.codePointAt(0));
  for (let i = 0; i < Math.min(aPoints.length, bPoints.length); i += 1) {
    if (aPoints[i] !== bPoints[i]) return aPoints[i] - bPoints[i];
  }
  return aPoints.length - bPoints.length;
}

/** @param {Array<string | number>} path */
function pointer(path) {
  return path.map((p) => `/${String(p).replaceAll('~', '~0').replaceAll('/', '~1')}`).join('');
}

function isValid(schema, data, root) {
  return walk(schema, data, [], root).next().done;
}

function typeOf(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value; // 'object', 'number', 'string', 'boolean'
}

function hasType(value, type) {
  const actual = typeOf(value);
  if (type === 'integer') return actual === 'number' && Number.isInteger(value);
  return actual === type;
}

function equal(a, b) {
  if (typeOf(a) !== typeOf(b)) return false;
  if (Array.isArray(a)) return a.length === b.length && a.every((item, i) => equal(item, b[i]));
  if (typeOf(a) === 'object') {
    const keys = Object.keys(a);
    return keys.length === Object.keys(b).length && keys.every((k) => Object.hasOwn(b, k) && equal(a[k], b[k]));
  }
  return a === b;
}

function resolve(root, ref) {
  if (!ref.startsWith('#')) throw new Error(`only local $refs resolve here, not ${ref}`);
  let node = root;
  for (const raw of ref.slice(1).split('/').slice(1)) {
    const key = decodeURIComponent(raw).replaceAll('~1', '/').replaceAll('~0', '~');
    if (node === null || typeof node !== 'object' || !Object.hasOwn(node, key)) throw new Error(`$ref ${ref} points nowhere`);
    node = node[key];
  }
  return node;
}

const length = (text) => Array.from(text).length;

/**
 * The errors of `data` (at `path`) against `schema`, lazily, in jsonschema's order.
 * @returns {Generator<{path: Array<string | number>, keyword: string, message: string}>}
 */
function* walk(schema, data, path, root) {
  if (schema === true) return;
  if (schema === false) {
    yield { path, keyword: 'false', message: 'no value is allowed here' };
    return;
  }
  if (typeOf(schema) !== 'object') return;
  if (typeof schema.$ref === 'string') {
    // Draft-07: a $ref's siblings are ignored.
    yield* walk(resolve(root, schema.$ref), data, path, root);
    return;
  }
  const error = (keyword, message) => ({ path, keyword, message });
  const type = typeOf(data);
  for (const [keyword, value] of Object.entries(schema)) {
    switch (keyword) {
      case 'type': {
        const types = Array.isArray(value) ? value : [value];
        if (!types.some((t) => hasType(data, t))) yield error(keyword, `must be of type ${types.join(' or ')}`);
        break;
      }
      case 'enum':
        if (!value.some((v) => equal(v, data))) yield error(keyword, 'must be one of the allowed values');
        break;
      case 'const':
        if (!equal(value, data)) yield error(keyword, 'must be equal to the constant');
        break;
      case 'multipleOf':
        if (type === 'number' && !Number.isInteger(data / value)) yield error(keyword, `must be a multiple of ${value}`);
        break;
      case 'maximum':
        if (type === 'number' && data > value) yield error(keyword, `must be <= ${value}`);
        break;
      case 'exclusiveMaximum':
        if (type === 'number' && data >= value) yield error(keyword, `must be < ${value}`);
        break;
      case 'minimum':
        if (type === 'number' && data < value) yield error(keyword, `must be >= ${value}`);
        break;
      case 'exclusiveMinimum':
        if (type === 'number' && data <= value) yield error(keyword, `must be > ${value}`);
        break;
      case 'maxLength':
        if (type === 'string' && length(data) > value) yield error(keyword, `must not have more than ${value} characters`);
        break;
      case 'minLength':
        if (type === 'string' && length(data) < value) yield error(keyword, `must not have fewer than ${value} characters`);
        break;
      case 'pattern':
        if (type === 'string' && !new RegExp(value, 'u').test(data)) yield error(keyword, `must match pattern "${value}"`);
        break;
      case 'items':
        if (type !== 'array') break;
        if (Array.isArray(value)) {
          for (let i = 0; i < Math.min(value.length, data.length); i += 1) yield* walk(value[i], data[i], [...path, i], root);
        } else {
          for (let i = 0; i < data.length; i += 1) yield* walk(value, data[i], [...path, i], root);
        }
        break;
      case 'additionalItems':
        if (type !== 'array' || !Array.isArray(schema.items) || data.length <= schema.items.length) break;
        if (value === false) yield error(keyword, `must not have more than ${schema.items.length} items`);
        else for (let i = schema.items.length; i < data.length; i += 1) yield* walk(value, data[i], [...path, i], root);
        break;
      case 'maxItems':
        if (type === 'array' && data.length > value) yield error(keyword, `must not have more than ${value} items`);
        break;
      case 'minItems':
        if (type === 'array' && data.length < value) yield error(keyword, `must not have fewer than ${value} items`);
        break;
      case 'uniqueItems':
        if (value && type === 'array' && data.some((item, i) => data.slice(i + 1).some((other) => equal(item, other)))) {
          yield error(keyword, 'must not have duplicate items');
        }
        break;
      case 'contains':
        if (type === 'array' && !data.some((item) => isValid(value, item, root))) yield error(keyword, 'must contain a valid item');
        break;
      case 'maxProperties':
        if (type === 'object' && Object.keys(data).length > value) yield error(keyword, `must not have more than ${value} properties`);
        break;
      case 'minProperties':
        if (type === 'object' && Object.keys(data).length < value) yield error(keyword, `must not have fewer than ${value} properties`);
        break;
      case 'required':
        if (type !== 'object') break;
        for (const name of value) if (!Object.hasOwn(data, name)) yield error(keyword, `must have required property '${name}'`);
        break;
      case 'properties':
        if (type !== 'object') break;
        for (const [name, subschema] of Object.entries(value)) {
          if (Object.hasOwn(data, name)) yield* walk(subschema, data[name], [...path, name], root);
        }
        break;
      case 'patternProperties':
        if (type !== 'object') break;
        for (const [pattern, subschema] of Object.entries(value)) {
          const regexp = new RegExp(pattern, 'u');
          for (const name of Object.keys(data)) if (regexp.test(name)) yield* walk(subschema, data[name], [...path, name], root);
        }
        break;
      case 'additionalProperties': {
        if (type !== 'object') break;
        const patterns = Object.keys(schema.patternProperties ?? {}).map((p) => new RegExp(p, 'u'));
        const extras = Object.keys(data).filter(
          (name) => !Object.hasOwn(schema.properties ?? {}, name) && !patterns.some((p) => p.test(name)),
        );
        if (value === false) {
          if (extras.length) yield error(keyword, `must not have the properties ${extras.map((e) => `'${e}'`).join(', ')}`);
        } else {
          for (const name of extras) yield* walk(value, data[name], [...path, name], root);
        }
        break;
      }
      case 'dependencies':
        if (type !== 'object') break;
        for (const [name, dependency] of Object.entries(value)) {
          if (!Object.hasOwn(data, name)) continue;
          if (Array.isArray(dependency)) {
            for (const other of dependency) {
              if (!Object.hasOwn(data, other)) yield error(keyword, `must have property '${other}' when '${name}' is present`);
            }
          } else {
            yield* walk(dependency, data, path, root);
          }
        }
        break;
      case 'propertyNames':
        if (type !== 'object') break;
        for (const name of Object.keys(data)) yield* walk(value, name, path, root);
        break;
      case 'if':
        if (isValid(value, data, root)) {
          if ('then' in schema) yield* walk(schema.then, data, path, root);
        } else if ('else' in schema) {
          yield* walk(schema.else, data, path, root);
        }
        break;
      case 'allOf':
        for (const subschema of value) yield* walk(subschema, data, path, root);
        break;
      case 'anyOf':
        if (!value.some((subschema) => isValid(subschema, data, root))) yield error(keyword, 'must match a schema in anyOf');
        break;
      case 'oneOf': {
        const matching = value.filter((subschema) => isValid(subschema, data, root)).length;
        if (matching !== 1) yield error(keyword, `must match exactly one schema in oneOf (matches ${matching})`);
        break;
      }
      case 'not':
        if (isValid(value, data, root)) yield error(keyword, 'must not be valid under the schema in not');
        break;
      default: // annotations (format, title, default, ...), definitions, x-gateway
    }
  }
}
