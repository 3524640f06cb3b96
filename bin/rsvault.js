#!/usr/bin/env node
// Entry point of the `rsvault` binary: runs the compiled CLI (built by `npm ci` via the `prepare` script).
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const compiled = join(root, 'dist', 'main.js');
if (!existsSync(compiled)) {
  process.stderr.write('rsvault: not built yet; run `npm run build` (npm ci does it for you)\n');
  process.exit(2);
}
await import(pathToFileURL(compiled).href);
