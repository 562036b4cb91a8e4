// Example worker for `text.stats`, in JavaScript: the Node worker kit (clients/js, on
// amqplib) counting a text's characters, words and lines. With the contract, the kit checks
// every result against it before sending: a bug here fails the job `invalid_result`
// instead of answering off-contract.
//
//   GATEWAY_BROKER_URL=amqp://guest:guest@127.0.0.1:5673/ node examples/workers/text_stats.mjs
//
// From the clone it imports the kit by path (amqplib resolves from clients/js/node_modules;
// `npm install` there, which `make setup` does). Installed from npm, it would be
// `import { Worker } from '@amqp-http-gateway/client/worker'`.
import { Worker } from '../../clients/js/src/worker.js';

const contract = new URL('../../schemas/ops/text.stats.json', import.meta.url);
const worker = new Worker(process.env.GATEWAY_BROKER_URL || 'amqp://guest:guest@127.0.0.1:5673/');

worker.operation('text.stats', async ({ text }) => ({
  characters: [...text].length, // code points, not UTF-16 units
  words: text.split(/\s+/u).filter(Boolean).length,
  lines: text === '' ? 0 : text.split('\n').length - (text.endsWith('\n') ? 1 : 0),
}), { contract });

await worker.run(); // until SIGTERM/SIGINT
