#!/usr/bin/env node
/**
 * Builds native/ (the AES-256-GCM addon, see native/README.md) with npm's bundled node-gyp:
 *   node-gyp rebuild --directory native [--nodedir=<npm config nodedir>]
 * Output: native/build/Release/rsvault_native.node.
 *
 * The addon is optional: when the build fails (no compiler, no python, no headers, ...) this prints
 * one warning line and exits 0; src/engine/native.ts then falls back to node:crypto.
 * RSVAULT_NATIVE_VERBOSE=1 shows node-gyp's output.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const nativeDir = path.join(root, 'native');
const output = path.join(nativeDir, 'build', 'Release', 'rsvault_native.node');
const verbose = process.env.RSVAULT_NATIVE_VERBOSE === '1';

function warn(reason) {
  console.warn(`rsvault: native AES-GCM addon not built (${reason}); using Node's crypto (slower)`);
  process.exit(0);
}

/** npm's own node-gyp: set by npm in lifecycle scripts, otherwise next to the npm that ships with this node. */
function findNodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    path.join(path.dirname(process.execPath), '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'), // unix layout
    path.join(path.dirname(process.execPath), 'node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'), // windows layout
  ];
  return candidates.find((p) => p && existsSync(p));
}

/** `nodedir` from the environment (npm sets it in lifecycle scripts) or, when run directly, from `npm config`. */
function findNodedir() {
  if (process.env.npm_config_nodedir !== undefined) return process.env.npm_config_nodedir;
  const npmCli = [
    process.env.npm_execpath,
    path.join(path.dirname(process.execPath), '../lib/node_modules/npm/bin/npm-cli.js'),
    path.join(path.dirname(process.execPath), 'node_modules/npm/bin/npm-cli.js'),
  ].find((p) => p && p.endsWith('.js') && existsSync(p));
  if (!npmCli) return '';
  const r = spawnSync(process.execPath, [npmCli, 'config', 'get', 'nodedir'], { encoding: 'utf8', cwd: root });
  const v = r.status === 0 ? r.stdout.trim() : '';
  return v === 'undefined' || v === 'null' ? '' : v;
}

/** The most telling line of a failed node-gyp run. */
function reasonOf(log) {
  const lines = log.split('\n').map((l) => l.trim()).filter(Boolean);
  const own = lines.filter((l) => !/^gyp (ERR|WARN|info|verb)!? /.test(l));
  const pick =
    own.find((l) => /^make: .*(No such file|not found|Permission denied)/.test(l)) ?? // compiler / tool missing
    own.find((l) => /^(\/bin\/sh: .*)?\S*: (\d+: )?\S+: not found$/.test(l)) ??
    own.find((l) => /\b(fatal )?error:/i.test(l)) ?? // compiler / linker
    own.find((l) => /^gyp: /.test(l)) ?? // gyp: binding.gyp / common.gypi not found ...
    own.findLast((l) => /^[A-Za-z.]*(Error|Exception): /.test(l)) ?? // python traceback (e.g. CC not found)
    lines.find((l) => /^gyp ERR! stack Error:/.test(l)); // node-gyp itself (no python, no make, ...)
  return (pick ?? 'node-gyp failed')
    .replace(/^gyp ERR! stack /, '')
    .replace(/^gyp: /, '')
    .slice(0, 200);
}

const nodeGyp = findNodeGyp();
if (!nodeGyp) warn("npm's node-gyp not found");

const args = [nodeGyp, 'rebuild', '--directory', nativeDir];
const nodedir = findNodedir();
if (nodedir) args.push(`--nodedir=${nodedir}`);

const r = spawnSync(process.execPath, args, { cwd: root, encoding: 'utf8', stdio: verbose ? 'inherit' : 'pipe' });
if (r.error) warn(r.error.message);
if (r.status !== 0) {
  const log = `${r.stdout ?? ''}\n${r.stderr ?? ''}`;
  warn(verbose ? `node-gyp exited with ${r.status ?? r.signal}` : reasonOf(log));
}
if (!existsSync(output)) warn(`node-gyp succeeded but ${path.relative(root, output)} is missing`);
console.log(`rsvault: native AES-GCM addon built (${path.relative(root, output)})`);
