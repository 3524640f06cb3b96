/**
 * Authentication of what sits next to a chunk store (FORMAT.md "Manifest version 2", "Index file"):
 *
 * - `manifestKeyOf(keys)`: a MAC key derived from the store keys (HKDF-SHA256 over sealKey ‖ idKey,
 *   its own label), so neither the chunk id key nor the seal key is used for a second purpose.
 * - A **binding**: caller-chosen bytes naming where an object belongs (for a manifest: its
 *   recovery point, item and disk). The MAC covers the binding, so a manifest copied to another
 *   place (another disk, VM or recovery point, or an older manifest of the same disk moved into a
 *   newer point) fails authentication there.
 * - `writeFileExclusive`: durable create that never replaces an existing file (temp + fsync +
 *   link(2), which fails with EEXIST, + directory fsync): a name collision is detected, never an
 *   overwrite.
 */
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { EngineError } from './errors.js';
import { fsyncDir, publishViaTemp } from './fs-store.js';
import type { StoreKeys } from './seal.js';

const MANIFEST_KEY_INFO = Buffer.from('rsvault manifest mac v1', 'latin1');

/** The store's manifest/index MAC key (32 bytes), derived from its keys. */
export function manifestKeyOf(keys: StoreKeys): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.concat([keys.sealKey, keys.idKey]), Buffer.alloc(0), MANIFEST_KEY_INFO, 32));
}

/** What a MAC binds an object to: the key and the binding bytes (or a string, UTF-8). */
export interface MacContext {
  key: Uint8Array;
  binding: Uint8Array | string;
}

const bytesOf = (b: Uint8Array | string): Buffer => (typeof b === 'string' ? Buffer.from(b, 'utf8') : Buffer.from(b.buffer, b.byteOffset, b.byteLength));

/**
 * HMAC-SHA256(key, label ‖ u32le(binding length) ‖ binding ‖ body). The label separates the
 * object kinds (manifest, index) that share the key.
 */
export function macOf(label: string, ctx: MacContext, body: Uint8Array): Buffer {
  const binding = bytesOf(ctx.binding);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(binding.length, 0);
  return createHmac('sha256', ctx.key).update(Buffer.from(`${label}\0`, 'latin1')).update(len).update(binding).update(body).digest();
}

export function macEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * A canonical binding from named fields (`name=value` lines, in the order given). Values are
 * case-sensitive; callers normalise (e.g. lower-case ARM ids) before.
 */
export function bindingOf(fields: Array<[string, string]>): string {
  for (const [k, v] of fields) {
    if (/[=\n]/.test(k) || v.includes('\n')) throw new EngineError('InvalidArgument', `binding field '${k}' contains '=' or a newline`);
  }
  return fields.map(([k, v]) => `${k}=${v}`).join('\n');
}

/**
 * Durably create `file` with `data`, failing with EngineError 'AlreadyExists' if it exists (or
 * appears meanwhile): temp + fsync, then link(2) to the final name (atomic, never replaces),
 * unlink the temp, fsync the directory.
 */
export function writeFileExclusive(file: string, data: Uint8Array): Promise<void> {
  const dir = path.dirname(file);
  return publishViaTemp(file, data, async (tmp) => {
    try {
      await fsp.link(tmp, file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new EngineError('AlreadyExists', `${path.basename(file)} already exists in ${dir}; it is never overwritten`);
      throw err;
    }
    await fsp.unlink(tmp);
    await fsyncDir(dir);
  });
}
