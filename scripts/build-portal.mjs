#!/usr/bin/env node
// Builds the portal (type check + `vite build`) into portal/dist, part of `npm run build`.
// - Skips the work when portal/dist is newer than every portal source (most `npm run build` runs only touch the server).
// - Builds into a temporary directory and swaps it in, so a server or test reading portal/dist never sees a half-written
//   build, and two builds started at once (several test suites or engineers in one checkout) cannot empty each
//   other's output. (Vite is pinned to 8.3.x, see package.json history: 8.4 does not install with npm ci here.)
// `--force` rebuilds regardless.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const portal = path.join(root, 'portal');
const dist = path.join(portal, 'dist');
const stamp = path.join(dist, '.build-stamp');

function newest(p) {
  const st = statSync(p);
  if (!st.isDirectory()) return st.mtimeMs;
  let m = st.mtimeMs;
  for (const e of readdirSync(p)) m = Math.max(m, newest(path.join(p, e)));
  return m;
}

const inputs = [path.join(portal, 'src'), path.join(portal, 'index.html'), path.join(portal, 'vite.config.ts'), path.join(portal, 'tsconfig.json'), path.join(root, 'package-lock.json')];
const force = process.argv.includes('--force');
if (!force && existsSync(stamp) && statSync(stamp).mtimeMs >= Math.max(...inputs.filter(existsSync).map(newest))) {
  process.exit(0);
}

const bin = (name) => path.join(root, 'node_modules', '.bin', name);
const run = (cmd, args) => {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
};

run(bin('tsc'), ['-p', path.join(portal, 'tsconfig.json')]);
const tmp = path.join(portal, `.dist-${process.pid}`);
run(bin('vite'), ['build', portal, '--outDir', tmp, '--emptyOutDir', '--logLevel', 'warn']);
writeFileSync(path.join(tmp, '.build-stamp'), new Date().toISOString() + '\n');
const old = path.join(portal, `.dist-old-${process.pid}`);
if (existsSync(dist)) renameSync(dist, old);
try {
  renameSync(tmp, dist);
} catch (e) {
  // Another build swapped its output in first: keep it.
  if (!existsSync(dist)) throw e;
  rmSync(tmp, { recursive: true, force: true });
}
rmSync(old, { recursive: true, force: true });
