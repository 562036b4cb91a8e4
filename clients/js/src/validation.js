/**
 * Validating requests (and topic messages) against their contract before sending, with Ajv (draft-07,
 * like the gateway's own Python validator).
 *
 * Ajv is CommonJS, which a browser page without a bundler cannot `import`. So Ajv is never
 * imported statically: Node loads it lazily with `import('ajv')`, and a browser page either
 * loads the `ajv-dist` UMD bundle (which defines `window.ajv7`), passes its own Ajv class
 * through `ajvValidator(Ajv)`, or leaves `validate` off (the gateway validates anyway).
 */

import { validationDetails } from './details.js';
import { GatewayError } from './errors.js';

/**
 * @typedef {{path: string, message: string}} ValidationDetail
 * @typedef {(data: unknown) => ValidationDetail[]} DefinitionCheck
 * @typedef {(schema: object, definition?: string) => DefinitionCheck | Promise<DefinitionCheck>} Validator
 */

/** Keeps one compiled Ajv per schema document, since each carries its own `definitions`. */
const compiled = new WeakMap();

/**
 * A Validator built on an Ajv class (Ajv 8, default export: draft-07).
 * Formats are annotations (as in draft-07 and on the gateway), and unknown keywords such as
 * `x-gateway` are allowed.
 * @param {any} Ajv the Ajv constructor
 * @returns {Validator}
 */
export function ajvValidator(Ajv) {
  const AjvClass = Ajv.default ?? Ajv;
  return (schema, definition) => {
    let entry = compiled.get(schema);
    if (!entry || entry.AjvClass !== AjvClass) {
      const ajv = new AjvClass({ allErrors: true, strict: false, validateFormats: false });
      const key = typeof schema.$id === 'string' ? schema.$id : 'contract.json';
      ajv.addSchema(schema, typeof schema.$id === 'string' ? undefined : key);
      entry = { AjvClass, ajv, key };
      compiled.set(schema, entry);
    }
    const ref = definition ? `${entry.key}#/definitions/${definition}` : entry.key;
    const check = entry.ajv.getSchema(ref);
    if (!check) throw new Error(`the schema has no ${definition ? `definition ${definition}` : 'root'}`);
    const target = definition ? schema.definitions?.[definition] : schema;
    // Ajv decides validity; the places are named as the gateway names them (details.js).
    return (data) => (check(data) ? [] : placesOf(target, data, schema, check.errors));
  };
}

/** The gateway's details; Ajv's own if the walk cannot tell (a $ref to another document). */
function placesOf(target, data, root, ajvErrors) {
  try {
    const details = validationDetails(target, data, root);
    if (details.length > 0) return details;
  } catch {
    // fall through to Ajv's list
  }
  return ajvErrors.map(detailOf);
}

/**
 * One Ajv error in the gateway's detail shape: `path` is a JSON pointer to the offending
 * value (the object itself for `required` and `additionalProperties`, like the server).
 * @param {any} error
 * @returns {ValidationDetail}
 */
function detailOf(error) {
  let message = error.message ?? 'is invalid';
  if (error.keyword === 'additionalProperties') {
    message += `: '${error.params.additionalProperty}'`;
  }
  return { path: error.instancePath ?? '', message };
}

/**
 * The default Validator: `window.ajv7` if a page loaded the ajv-dist bundle, else the
 * `ajv` package through a dynamic import (Node, or a bundler / import map).
 * @returns {Promise<Validator>}
 */
export async function defaultValidator() {
  if (globalThis.ajv7) return ajvValidator(globalThis.ajv7);
  let module;
  try {
    module = await import('ajv');
  } catch (cause) {
    throw new Error(
      'validate: true needs Ajv: in Node install the "ajv" package; in a browser without a ' +
        'bundler load ajv-dist/dist/ajv7.min.js (window.ajv7) or pass { validator: ajvValidator(Ajv) }',
      { cause },
    );
  }
  return ajvValidator(module.default);
}

/**
 * Throw the gateway's 422 shape, built locally, if `body` breaks the definition `check`s.
 * @param {DefinitionCheck} check
 * @param {unknown} body
 * @param {string} what the message's start, e.g. `request does not match the contract of math.add`
 */
export function assertValid(check, body, what) {
  const details = check(body);
  if (details.length === 0) return;
  const first = details[0];
  throw new GatewayError({
    status: 422,
    code: 'invalid_request',
    message: `${what}: ${first.message} (at ${first.path || 'the top level'})`,
    details,
    local: true,
  });
}
