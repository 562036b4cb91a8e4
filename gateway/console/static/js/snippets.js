/**
 * "Copy as": the call a filled form makes, as a curl command and as scripts for the
 * project's Python, JavaScript and Perl clients, each runnable as it is, the body a literal
 * of its language. Keys never go in: with `auth`, they read GATEWAY_TOKEN from the environment.
 */

/**
 * Snippets that submit a job, waiting up to `wait` seconds for it to finish.
 * @param {{apiBase: string, op: string, body: unknown, wait?: number, auth?: boolean}} call
 * @returns {{curl: string, python: string, javascript: string, perl: string}}
 */
export function snippets({ apiBase, op, body, wait, auth = false }) {
  const waits = typeof wait === 'number' && wait > 0;
  return write({
    apiBase, auth, data: body,
    path: `/v1/ops/${encodeURIComponent(op)}`,
    header: waits ? `-H "Prefer: wait=${wait}"` : null,
    python: `job = gw.submit(${json(op)}, body${waits ? `, wait=${wait}` : ''})`,
    javascript: `const job = await gateway.submit(${json(op)}, body${waits ? `, { wait: ${wait} }` : ''});`,
    perl: `my $answer = $gateway->submit(${perlString(op)}, $body${waits ? `, wait => ${wait}` : ''});`,
    result: ['job', '$answer->{job}'],
  });
}

/**
 * Snippets that publish `message` to `topic`.
 * @param {{apiBase: string, topic: string, message: unknown, auth?: boolean}} publish
 * @returns {{curl: string, python: string, javascript: string, perl: string}}
 */
export function topicSnippets({ apiBase, topic, message, auth = false }) {
  return write({
    apiBase, auth, data: message,
    path: `/v1/topics/${encodeURIComponent(topic)}`,
    header: null,
    python: `accepted = gw.publish(${json(topic)}, body)`,
    javascript: `const accepted = await gateway.publish(${json(topic)}, body);`,
    perl: `my $answer = $gateway->publish(${perlString(topic)}, $body);`,
    result: ['accepted', '{ topic => $answer->{topic}, message_id => $answer->{message_id} }'],
  });
}

/** The four snippets; `data` undefined (say, JSON that does not parse yet) is written as null. */
function write({ apiBase, auth, data = null, path, header, python, javascript, perl, result: [name, perlResult] }) {
  const curl = [
    `curl -sS ${shellString(apiBase + path)}`,
    `-H 'Content-Type: application/json'`,
    header,
    auth && '-H "Authorization: Bearer $GATEWAY_TOKEN"',
    `--data ${shellString(json(data))}`,
  ].filter(Boolean).join(' \\\n  ');
  return {
    curl,
    python: [
      '# Python 3.11+, with the gateway package installed (it has gateway.client)',
      'import json',
      auth && 'import os',
      '',
      'from gateway.client import Client',
      '',
      `body = ${pythonLiteral(data, '')}`,
      '',
      `with Client(${json(apiBase)}${auth ? ', headers={"Authorization": "Bearer " + os.environ["GATEWAY_TOKEN"]}' : ''}) as gw:`,
      `    ${python}`,
      `print(json.dumps(${name}, indent=2, ensure_ascii=False))`,
    ].filter((line) => line !== false).join('\n'),
    javascript: [
      '// Node 20+, as an ES module (e.g. call.mjs), with @amqp-http-gateway/client installed',
      "import { GatewayClient } from '@amqp-http-gateway/client';",
      '',
      'const gateway = new GatewayClient({',
      `  baseUrl: ${json(apiBase)},`,
      auth && '  headers: { Authorization: `Bearer ${process.env.GATEWAY_TOKEN}` },',
      '});',
      `const body = ${json(data, 2)};`,
      javascript,
      `console.log(JSON.stringify(${name}, null, 2));`,
    ].filter((line) => line !== false).join('\n'),
    perl: [
      '# perl -I <the gateway>/clients/perl/lib call.pl',
      'use strict;',
      'use warnings;',
      'use Gateway::Client;',
      'use JSON::PP qw(decode_json);',
      '',
      'my $gateway = Gateway::Client->new(',
      `    base_url => ${perlString(apiBase)},`,
      auth && '    headers  => { Authorization => "Bearer $ENV{GATEWAY_TOKEN}" },',
      ');',
      `my $body = decode_json(${perlString(asciiJSON(data))});`,
      perl,
      'die "$answer->{status} $answer->{error}{code}: $answer->{error}{message}\\n" unless $answer->{ok};',
      `print JSON::PP->new->utf8->pretty->canonical->encode(${perlResult});`,
    ].filter((line) => line !== false).join('\n'),
  };
}

/**
 * JSON text with the characters people cannot see (controls, line and paragraph separators,
 * bidi and zero-width marks) as \u escapes: a copied snippet holds nothing hidden.
 */
function json(value, space) {
  return JSON.stringify(value, null, space).replace(/[\u007f-\u009f\u00ad\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]/g, unicodeEscape);
}

function unicodeEscape(char) {
  return `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`;
}

/** A shell word: single-quoted, each ' written as '\'' (close, escaped quote, reopen). */
function shellString(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

/** A Perl single-quoted string: only \ and ' are special in it. */
function perlString(text) {
  return `'${text.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
}

/** JSON in ASCII (others as \u escapes): decode_json wants bytes, and the script stays ASCII. */
function asciiJSON(value) {
  return JSON.stringify(value).replace(/[^\x20-\x7e]/g, unicodeEscape);
}

/**
 * A Python literal of a JSON value: None/True/False, and strings as JSON writes them (its
 * escapes — \" \\ \n \t \uXXXX … — mean the same in a Python string).
 */
function pythonLiteral(value, indent) {
  if (value === null) return 'None';
  if (typeof value === 'boolean') return value ? 'True' : 'False';
  if (typeof value !== 'object') return json(value);
  const inner = `${indent}    `;
  const [open, close, lines] = Array.isArray(value)
    ? ['[', ']', value.map((item) => pythonLiteral(item, inner))]
    : ['{', '}', Object.entries(value).map(([key, item]) => `${json(key)}: ${pythonLiteral(item, inner)}`)];
  return lines.length ? `${open}\n${lines.map((line) => `${inner}${line},`).join('\n')}\n${indent}${close}` : open + close;
}
