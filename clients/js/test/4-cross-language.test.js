/**
 * The cross-language loop: this JS client calls `text.upper`, which the Perl worker
 * (examples/perl/text_upper.pl) serves over AMQP through the gateway. Runs last (files run
 * in name order): it skips, saying so, if that worker does not exist.
 */

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { GatewayClient } from '../src/index.js';
import { GATEWAY_URL, NEEDS_GATEWAY, REPO_ROOT } from './support.js';

const PERL_WORKER = join(REPO_ROOT, 'examples', 'perl', 'text_upper.pl');
const skip = NEEDS_GATEWAY || (!existsSync(PERL_WORKER) && `no Perl worker yet at ${PERL_WORKER}`);

test('JS client → gateway → RabbitMQ → Perl worker: text.upper', { skip }, async () => {
  const gateway = new GatewayClient({ baseUrl: GATEWAY_URL, validate: true });
  assert.deepEqual(await gateway.call('text.upper', { text: 'hello' }, { timeout: 30 }), { text: 'HELLO' });
});
