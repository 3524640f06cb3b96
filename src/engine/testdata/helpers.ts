/** Test helpers for the engine's tests (not used by production code). */
import { createHash, randomBytes } from 'node:crypto';
import { blake3 } from '../blake3.js';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export async function tempDir(prefix = 'rsvault-engine-'): Promise<{ dir: string; dispose: () => Promise<void> }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  return { dir, dispose: () => fsp.rm(dir, { recursive: true, force: true }) };
}

/**
 * Build an image from segments: 'r' random, 'z' zeros, or a Buffer. Sizes in bytes.
 */
export async function writeImage(file: string, segments: Array<[('r' | 'z'), number] | Buffer>): Promise<Buffer> {
  const parts = segments.map((s) => (Buffer.isBuffer(s) ? s : s[0] === 'r' ? randomBytes(s[1]) : Buffer.alloc(s[1])));
  const data = Buffer.concat(parts);
  await fsp.writeFile(file, data);
  return data;
}

export function sha256(data: Uint8Array): Buffer {
  return createHash('sha256').update(data).digest();
}

/** Independent reference of a chunk hash (straight from the libraries, not the engine). */
export function hashOf(data: Uint8Array, alg: 'sha256' | 'blake3'): Buffer {
  return alg === 'blake3' ? blake3(data) : sha256(data);
}

/**
 * Independent reference of FORMAT.md's image digest: H over the H of each chunk, H the store's
 * chunk hash (BLAKE3 for stores from `generateStoreKeys()`).
 */
export function imageDigest(data: Uint8Array, chunkSize: number, alg: 'sha256' | 'blake3' = 'blake3'): Buffer {
  const parts: Buffer[] = [];
  for (let off = 0; off < data.length; off += chunkSize) parts.push(hashOf(data.subarray(off, Math.min(data.length, off + chunkSize)), alg));
  return hashOf(Buffer.concat(parts), alg);
}

/** Count committed chunk files of an fs store. */
export async function countChunks(storeRoot: string): Promise<number> {
  let n = 0;
  const chunks = path.join(storeRoot, 'chunks');
  for (const d of await fsp.readdir(chunks).catch(() => [] as string[])) {
    for (const f of await fsp.readdir(path.join(chunks, d))) if (/^[0-9a-f]{64}$/.test(f)) n++;
  }
  return n;
}

export async function chunkPath(storeRoot: string, id: string): Promise<string> {
  return path.join(storeRoot, 'chunks', id.slice(0, 4), id);
}

/** Set every chunk file's mtime to `when` (simulate old chunks for GC tests). */
export async function ageChunks(storeRoot: string, when: Date): Promise<void> {
  const chunks = path.join(storeRoot, 'chunks');
  for (const d of await fsp.readdir(chunks).catch(() => [] as string[])) {
    for (const f of await fsp.readdir(path.join(chunks, d))) await fsp.utimes(path.join(chunks, d, f), when, when);
  }
}
