#!/usr/bin/env node
// Entry point of the `rsvault` binary. `serve` loads the server (dist/main.js, the composition root); every other
// command loads only the CLI and its HTTPS client (dist/cli/main.js), so they start fast.
//
// This file is CommonJS (bin/package.json) and must stay so, setting UV_THREADPOOL_SIZE (serve only) before anything
// else: the server shares libuv's threadpool between disk reads/writes and the engine's chunk fsyncs, and with the
// default 4 threads fsyncs queue behind reads; 16 is the engine's recommendation (an explicit UV_THREADPOOL_SIZE
// still wins). libuv reads the variable once, when the pool starts at the first threadpool task. Node loads an
// ES-module entry with async file reads, which already starts the pool (4 threads) before the entry's first line
// runs; a CommonJS entry is read synchronously, so the assignment below takes effect (test/hardening.test.ts checks
// the server's thread count).
'use strict';
const words = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const isServe = words[0] === 'serve';
if (isServe) process.env.UV_THREADPOOL_SIZE ??= '16';
// `admin …` runs on the server host against its database: it loads the server code too.
const isServer = isServe || words[0] === 'admin';

const { existsSync } = require('node:fs');
const { pathToFileURL } = require('node:url');
const { join } = require('node:path');

const root = join(__dirname, '..');
const entry = join(root, 'dist', isServer ? 'main.js' : join('cli', 'main.js'));
if (!existsSync(entry)) {
  process.stderr.write('rsvault: not built yet; run `npm run build` (npm ci does it for you)\n');
  process.exit(2);
}
import(pathToFileURL(entry).href).catch((e) => {
  process.stderr.write(`rsvault: ${(e && e.stack) || String(e)}\n`);
  process.exit(1);
});
