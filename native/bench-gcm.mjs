#!/usr/bin/env node
/**
 * AES-256-GCM throughput, single thread, 4 MiB buffers x 256 iterations (1 GiB per line):
 *   native seal / native open (native/build/Release/rsvault_native.node, into a preallocated out)
 *   node:crypto createCipheriv / createDecipheriv in 64 KiB update() slices copied into a
 *   preallocated out (what src/engine/seal.ts does without the addon).
 * Usage: node native/bench-gcm.mjs [iterations]
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';

const SIZE = 4 * 1024 * 1024;
const SLICE = 64 * 1024;
const ITER = Number(process.argv[2] ?? 256);

const require = createRequire(import.meta.url);
let addon;
try {
  addon = require('./build/Release/rsvault_native.node');
} catch (err) {
  console.warn(`native addon not loaded (${err.message.split('\n')[0]}); run: node scripts/build-native.mjs`);
}

const key = randomBytes(32);
const aad = randomBytes(52);
const plain = randomBytes(SIZE);
const sealed = Buffer.alloc(SIZE + 16);
const out = Buffer.alloc(SIZE + 16);
const ivs = Array.from({ length: ITER }, () => randomBytes(12));

function nodeSeal(iv, src, dst) {
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(aad);
  for (let off = 0; off < src.length; off += SLICE) {
    c.update(src.subarray(off, Math.min(src.length, off + SLICE))).copy(dst, off);
  }
  c.final();
  c.getAuthTag().copy(dst, src.length);
}

function nodeOpen(iv, ct, tag, dst) {
  const d = createDecipheriv('aes-256-gcm', key, iv);
  d.setAAD(aad);
  d.setAuthTag(tag);
  for (let off = 0; off < ct.length; off += SLICE) {
    d.update(ct.subarray(off, Math.min(ct.length, off + SLICE))).copy(dst, off);
  }
  d.final();
}

function run(name, fn) {
  for (let i = 0; i < Math.min(16, ITER); i++) fn(i); // warm up
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < ITER; i++) fn(i);
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(`${name.padEnd(44)} ${((SIZE * ITER) / s / 1e9).toFixed(2)} GB/s  (${ITER} x 4 MiB in ${s.toFixed(3)} s)`);
}

console.log(`node ${process.version}, OpenSSL ${process.versions.openssl}`);
if (addon) {
  const ct = sealed.subarray(0, SIZE);
  const tag = sealed.subarray(SIZE);
  const iv0 = ivs[0];
  addon.seal(key, iv0, aad, plain, sealed);
  run('native seal', (i) => addon.seal(key, ivs[i], aad, plain, out));
  run('native open', () => {
    if (!addon.open(key, iv0, aad, ct, tag, out)) throw new Error('open failed');
  });
}
run('node:crypto cipher, 64 KiB update() + copy', (i) => nodeSeal(ivs[i], plain, out));
{
  const iv0 = ivs[0];
  nodeSeal(iv0, plain, sealed);
  const ct = sealed.subarray(0, SIZE);
  const tag = sealed.subarray(SIZE);
  run('node:crypto decipher, 64 KiB update() + copy', () => nodeOpen(iv0, ct, tag, out));
}
