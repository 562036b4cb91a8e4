/** The shared conformance vectors, in Node (the same checks run in Chromium: 3-browser.test.js). */

import { test } from 'node:test';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import Ajv from 'ajv';

import { SSEParser, ajvValidator, parseSSE } from '../src/index.js';
import { conformanceChecks } from './conformance.js';
import { GATEWAY_SCHEMAS } from './support.js';

const vectorFiles = (await readdir(join(GATEWAY_SCHEMAS, 'vectors'))).filter((name) => name.endsWith('.json'));
const load = async (relative) => JSON.parse(await readFile(join(GATEWAY_SCHEMAS, relative), 'utf8'));
const checks = await conformanceChecks({ load, vectorFiles, ajvValidator, Ajv, parseSSE, SSEParser });

test('every vector file is covered', (t) => {
  if (vectorFiles.length < 2) throw new Error(`only ${vectorFiles.length} vector files in ${GATEWAY_SCHEMAS}`);
  t.diagnostic(`${checks.length} checks from ${vectorFiles.length} files`);
});

for (const { name, check } of checks) test(name, check);
