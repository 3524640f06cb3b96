#!/usr/bin/env node
// Entry point of the `rsvault` binary. `serve` loads the server (dist/main.js, the composition root); every other
// command loads only the CLI and its HTTPS client (dist/cli/main.js), so they start fast.
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const isServe = process.argv.slice(2).find((a) => !a.startsWith('-')) === 'serve';
const entry = join(root, 'dist', isServe ? 'main.js' : join('cli', 'main.js'));
if (!existsSync(entry)) {
  process.stderr.write('rsvault: not built yet; run `npm run build` (npm ci does it for you)\n');
  process.exit(2);
}
await import(pathToFileURL(entry).href);
