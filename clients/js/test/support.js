/**
 * What the tests share: the environment the harness gives, a TCP proxy that can be cut
 * mid-stream, and a static file server for the browser pages.
 */

import { createServer as createHttpServer } from 'node:http';
import { createServer as createTcpServer, connect } from 'node:net';
import { readFile, stat } from 'node:fs/promises';
import { extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository's root (clients/js/test/ is three levels down). */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** The running gateway, or undefined: tests that need it skip without it. */
export const GATEWAY_URL = process.env.GATEWAY_URL?.replace(/\/+$/, '');
export const GATEWAY_SCHEMAS = process.env.GATEWAY_SCHEMAS ?? join(REPO_ROOT, 'schemas');
export const GATEWAY_PAGE_ORIGIN = process.env.GATEWAY_PAGE_ORIGIN;
export const NEEDS_GATEWAY = GATEWAY_URL ? false : 'GATEWAY_URL is not set (no gateway to test against)';

/**
 * A TCP proxy to `targetUrl`'s host and port. `cut()` destroys every open connection (both
 * sides) — a dropped network, not a clean close. `requests` lists the request heads that
 * went through it, so tests can see reconnects and their Last-Event-ID.
 * @param {string} targetUrl
 */
export async function startProxy(targetUrl) {
  const target = new URL(targetUrl);
  const sockets = new Set();
  const requests = [];
  const newRequestListeners = new Set();
  const server = createTcpServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => {});
    }
    client.on('data', (chunk) => {
      for (const head of requestHeads(chunk.toString('latin1'))) {
        requests.push(head);
        for (const listener of newRequestListeners) listener(head);
      }
    });
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    /** Resolves with the first request head (now or later) that `matches`. */
    waitForRequest(matches) {
      const seen = requests.find(matches);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve) => {
        const listener = (head) => {
          if (matches(head)) {
            newRequestListeners.delete(listener);
            resolve(head);
          }
        };
        newRequestListeners.add(listener);
      });
    },
    cut() {
      for (const socket of sockets) socket.destroy();
    },
    close() {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/** `{method, path, headers}` for each HTTP request head starting in `text` (lowercase header names). */
function requestHeads(text) {
  const heads = [];
  const pattern = /(?:^|\r\n)(GET|POST|DELETE|OPTIONS|PUT|HEAD) (\S+) HTTP\/1\.1\r\n([\s\S]*?)\r\n\r\n/g;
  for (const match of text.matchAll(pattern)) {
    const headers = {};
    for (const line of match[3].split('\r\n')) {
      const colon = line.indexOf(':');
      if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    heads.push({ method: match[1], path: match[2], headers });
  }
  return heads;
}

const CONTENT_TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.json': 'application/json',
  '.css': 'text/css',
};

/**
 * A static server for the browser tests on `origin`'s port, serving only `mounts`
 * (URL prefix → directory), with no directory listings and no `..` escapes.
 * @param {string} origin e.g. http://127.0.0.1:8791
 * @param {Record<string, string>} mounts
 */
export async function startStaticServer(origin, mounts) {
  const server = createHttpServer(async (request, response) => {
    const path = decodeURIComponent(new URL(request.url, origin).pathname);
    const mount = Object.keys(mounts).find((prefix) => path.startsWith(prefix));
    const root = mount && normalize(mounts[mount]);
    const file = mount && normalize(join(root, path.slice(mount.length)));
    try {
      if (!file || !(file === root || file.startsWith(root.endsWith(sep) ? root : root + sep))) throw new Error('outside');
      if (!(await stat(file)).isFile()) throw new Error('not a file');
      response.writeHead(200, {
        'Content-Type': CONTENT_TYPES[extname(file)] ?? 'application/octet-stream',
        'Cache-Control': 'no-store',
      });
      response.end(await readFile(file));
    } catch {
      response.writeHead(404, { 'Content-Type': 'text/plain' });
      response.end('not found');
    }
  });
  const { hostname, port } = new URL(origin);
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(port), hostname, resolve);
  });
  return { close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }) };
}

/** Launch Debian's Chromium through playwright-core (no browser downloads). */
export async function launchChromium() {
  const { chromium } = await import('playwright-core');
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}
