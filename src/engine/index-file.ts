/**
 * Index file: a small authenticated JSON record kept next to a group of manifests (FORMAT.md
 * "Index file"), so the group can be catalogued again from the store directory alone. The engine
 * gives it no meaning: the caller chooses the JSON and the binding (e.g. the recovery point id it
 * belongs to). Authenticated with the store's manifest key (manifest-auth.ts), not encrypted:
 * callers put secrets in it only sealed by their own keys.
 */
import { promises as fsp } from 'node:fs';
import { EngineError } from './errors.js';
import { macEqual, macOf, writeFileExclusive, type MacContext } from './manifest-auth.js';
import { writeFileDurable } from './fs-store.js';

export const INDEX_MAGIC = Buffer.from('RSVRPIX\0', 'latin1');
export const INDEX_VERSION = 1;
const INDEX_LABEL = 'rsvault index v1';
const HEADER = 16;
const TRAILER = 32;
/** Upper bound of the JSON (VM configs are small; this stops a damaged length from allocating GBs). */
export const INDEX_MAX_JSON = 16 * 1024 * 1024;

export function encodeIndexFile(payload: unknown, mac: MacContext): Buffer {
  const json = Buffer.from(JSON.stringify(payload), 'utf8');
  if (json.length > INDEX_MAX_JSON) throw new EngineError('InvalidArgument', `index payload is ${json.length} bytes, over ${INDEX_MAX_JSON}`);
  const out = Buffer.alloc(HEADER + json.length + TRAILER);
  INDEX_MAGIC.copy(out, 0);
  out.writeUInt16LE(INDEX_VERSION, 8);
  out.writeUInt16LE(0, 10);
  out.writeUInt32LE(json.length, 12);
  json.copy(out, HEADER);
  macOf(INDEX_LABEL, mac, out.subarray(0, HEADER + json.length)).copy(out, HEADER + json.length);
  return out;
}

/** Decodes and authenticates an index file; EngineError 'ManifestCorrupted' / 'ManifestAuthenticationFailed'. */
export function decodeIndexFile<T = unknown>(data: Uint8Array, mac: MacContext): T {
  const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const bad = (why: string) => new EngineError('ManifestCorrupted', `index file is corrupted: ${why}`);
  if (b.length < HEADER + TRAILER) throw bad('too short');
  if (!b.subarray(0, 8).equals(INDEX_MAGIC)) throw bad('bad magic');
  const version = b.readUInt16LE(8);
  if (version !== INDEX_VERSION) throw bad(`unknown version ${version}`);
  if (b.readUInt16LE(10) !== 0) throw bad('unknown flags');
  const len = b.readUInt32LE(12);
  if (len > INDEX_MAX_JSON || b.length !== HEADER + len + TRAILER) throw bad('length does not match');
  if (!macEqual(macOf(INDEX_LABEL, mac, b.subarray(0, HEADER + len)), b.subarray(HEADER + len))) {
    throw new EngineError('ManifestAuthenticationFailed', 'index file authentication failed: it was changed, or belongs to another recovery point or store');
  }
  try {
    return JSON.parse(b.subarray(HEADER, HEADER + len).toString('utf8')) as T;
  } catch {
    throw bad('payload is not JSON');
  }
}

/** Durable write (exclusive by default: an existing index is never replaced). */
export async function writeIndexFile(file: string, payload: unknown, mac: MacContext, options: { exclusive?: boolean } = {}): Promise<void> {
  const data = encodeIndexFile(payload, mac);
  if (options.exclusive === false) await writeFileDurable(file, data);
  else await writeFileExclusive(file, data);
}

export async function readIndexFile<T = unknown>(file: string, mac: MacContext): Promise<T> {
  return decodeIndexFile<T>(await fsp.readFile(file), mac);
}
