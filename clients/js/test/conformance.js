/**
 * The shared conformance vectors (schemas/vectors/), as a list of named checks that run the
 * same in Node (test/1-vectors.test.js, under node:test) and in Chromium
 * (test/browser/conformance.html): so the client provably agrees with the Python and Perl
 * suites in both places it runs. No node: imports here, on purpose.
 */

/**
 * @typedef {{name: string, check: () => void}} Check
 * @param {object} deps
 * @param {(relativePath: string) => Promise<any>} deps.load  a JSON file under schemas/
 * @param {string[]} deps.vectorFiles  file names in schemas/vectors/
 * @param {import('../src/index.js').ajvValidator} deps.ajvValidator
 * @param {any} deps.Ajv  the Ajv class (the `ajv` package in Node, ajv-dist's bundle in a page)
 * @param {import('../src/index.js').parseSSE} deps.parseSSE
 * @param {import('../src/index.js').SSEParser} deps.SSEParser
 * @returns {Promise<Check[]>}
 */
export async function conformanceChecks({ load, vectorFiles, ajvValidator, Ajv, parseSSE, SSEParser }) {
  const validator = ajvValidator(Ajv);
  const checks = [];
  for (const file of [...vectorFiles].sort()) {
    const vectors = await load(`vectors/${file}`);
    if (file === 'sse-frames.json') {
      checks.push(...sseChecks(file, vectors, parseSSE, SSEParser));
      continue;
    }
    const schema = await load(vectors.schema);
    for (const [index, testCase] of vectors.cases.entries()) {
      const where = testCase.definition ? `#/definitions/${testCase.definition}` : '';
      checks.push({
        name: `${file} #${index} ${vectors.schema}${where}: ${testCase.description}`,
        check() {
          const details = validator(schema, testCase.definition)(testCase.data);
          const valid = details.length === 0;
          if (valid !== testCase.valid) {
            throw new Error(`expected ${testCase.valid ? 'valid' : 'invalid'}, got ${JSON.stringify(details)}`);
          }
          for (const detail of details) {
            if (typeof detail.path !== 'string' || !(detail.path === '' || detail.path.startsWith('/'))) {
              throw new Error(`detail path is not a JSON pointer: ${JSON.stringify(detail)}`);
            }
          }
          // The gateway's paths, in the gateway's order (messages are the client's own).
          const paths = JSON.stringify(details.map((detail) => detail.path));
          const expected = JSON.stringify(testCase.details ?? []);
          if (paths !== expected) throw new Error(`expected details at ${expected}, got ${paths}`);
        },
      });
    }
  }
  return checks;
}

/** Each stream parsed whole, and again fed one character at a time (chunking must not matter). */
function sseChecks(file, vectors, parseSSE, SSEParser) {
  return vectors.cases.flatMap((testCase, index) => [
    {
      name: `${file} #${index}: ${testCase.description}`,
      check: () => assertSameEvents(parseSSE(testCase.stream), testCase.events),
    },
    {
      name: `${file} #${index} (fed char by char): ${testCase.description}`,
      check() {
        const parser = new SSEParser();
        const events = [...testCase.stream].flatMap((char) => parser.feed(char));
        assertSameEvents(events, testCase.events);
      },
    },
  ]);
}

function assertSameEvents(actual, expected) {
  const shape = (events) => JSON.stringify(events.map(({ id, event, data }) => ({ id, event, data })));
  if (shape(actual) !== shape(expected)) {
    throw new Error(`expected ${shape(expected)}, got ${shape(actual)}`);
  }
}
