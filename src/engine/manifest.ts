/**
 * Manifest: how one image is rebuilt from chunks (a fixed index, as PBS's .fidx). Binary format
 * in FORMAT.md; 32 bytes per chunk, so memory stays O(image), never O(store).
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { EngineError } from './errors.js';
import { writeFileDurable } from './fs-store.js';
import { macEqual, macOf, writeFileExclusive, type MacContext } from './manifest-auth.js';
import type { ChunkHash } from './seal.js';
import type { ChunkStore } from './store.js';

export const MANIFEST_MAGIC = Buffer.from('RSVMFST\0', 'latin1');
/** Version 1: trailer = SHA-256 of the file (unkeyed). Still read; written only without a MAC context. */
export const MANIFEST_VERSION = 1;
/** Version 2: trailer = HMAC-SHA256 under the store's manifest key, bound to the caller's binding (FORMAT.md). */
export const MANIFEST_VERSION_AUTH = 2;
const MANIFEST_MAC_LABEL = 'rsvault manifest v2';
export const MANIFEST_HEADER_BYTES = 64;
export const MANIFEST_TRAILER_BYTES = 32;
export const FLAG_IMAGE_DIGEST = 1;
/** Chunk hashes (ids and image digest) are BLAKE3; clear: SHA-256. */
export const FLAG_BLAKE3 = 2;
const KNOWN_FLAGS = FLAG_IMAGE_DIGEST | FLAG_BLAKE3;
export const MIN_CHUNK_SIZE = 64 * 1024;
export const MAX_CHUNK_SIZE = 64 * 1024 * 1024;
const ZERO_ID = Buffer.alloc(32);

export function checkChunkSize(chunkSize: number): void {
  if (!Number.isInteger(chunkSize) || chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE || chunkSize % MIN_CHUNK_SIZE !== 0) {
    throw new EngineError('InvalidArgument', `chunk size ${chunkSize} must be a multiple of 64 KiB between 64 KiB and 64 MiB`);
  }
}

export class Manifest {
  /** The format version it was decoded from (1: unauthenticated, 2: MAC); 1 for a new manifest until encoded with a MAC. */
  version: number = MANIFEST_VERSION;
  /** True when decoded from a version-2 file whose MAC was checked against the caller's key and binding. */
  authenticated = false;
  /** The file's trailer (SHA-256 for v1, the MAC for v2) once encoded or decoded. */
  trailer: Buffer | undefined;
  readonly chunkCount: number;

  /**
   * @param ids chunkCount × 32 bytes; an all-zero id is a hole (an all-zero chunk, not stored).
   * @param imageDigest whole-image digest (FORMAT.md: H over the chunks' H, H the chunk hash)
   *   when known (full reads), else undefined.
   * @param chunkHash the hash behind the ids and the image digest (the store's).
   */
  constructor(
    readonly diskSize: number,
    readonly chunkSize: number,
    readonly ids: Uint8Array,
    readonly imageDigest: Buffer | undefined,
    readonly chunkHash: ChunkHash = 'sha256',
  ) {
    checkChunkSize(chunkSize);
    if (!Number.isSafeInteger(diskSize) || diskSize < 0) throw new EngineError('InvalidArgument', `bad disk size ${diskSize}`);
    this.chunkCount = Math.ceil(diskSize / chunkSize);
    if (ids.length !== this.chunkCount * 32) throw new EngineError('InvalidArgument', 'ids length does not match the chunk count');
    if (imageDigest && imageDigest.length !== 32) throw new EngineError('InvalidArgument', 'image digest must be 32 bytes');
  }

  /** The raw 32-byte id of chunk i (a view, do not modify). */
  idAt(i: number): Buffer {
    return Buffer.from(this.ids.buffer, this.ids.byteOffset + i * 32, 32);
  }

  idHex(i: number): string {
    return this.idAt(i).toString('hex');
  }

  isHole(i: number): boolean {
    return this.idAt(i).equals(ZERO_ID);
  }

  offsetOf(i: number): number {
    return i * this.chunkSize;
  }

  /** Bytes of the image chunk i covers (the last one may be short). */
  lengthOf(i: number): number {
    return Math.min(this.chunkSize, this.diskSize - i * this.chunkSize);
  }

  /** Distinct non-hole ids, in first-use order. */
  *distinctIds(): Iterable<string> {
    const seen = new Set<string>();
    for (let i = 0; i < this.chunkCount; i++) {
      if (this.isHole(i)) continue;
      const h = this.idHex(i);
      if (!seen.has(h)) {
        seen.add(h);
        yield h;
      }
    }
  }
}

/**
 * Encode a manifest: version 1 (SHA-256 trailer) without `mac`; version 2 (HMAC bound to
 * `mac.binding`) with it. Sets `m.trailer`.
 */
export function encodeManifest(m: Manifest, mac?: MacContext): Buffer {
  const out = Buffer.alloc(MANIFEST_HEADER_BYTES + m.ids.length + MANIFEST_TRAILER_BYTES);
  MANIFEST_MAGIC.copy(out, 0);
  out.writeUInt16LE(mac ? MANIFEST_VERSION_AUTH : MANIFEST_VERSION, 8);
  out.writeUInt16LE((m.imageDigest ? FLAG_IMAGE_DIGEST : 0) | (m.chunkHash === 'blake3' ? FLAG_BLAKE3 : 0), 10);
  out.writeUInt32LE(m.chunkSize, 12);
  out.writeBigUInt64LE(BigInt(m.diskSize), 16);
  out.writeBigUInt64LE(BigInt(m.chunkCount), 24);
  if (m.imageDigest) m.imageDigest.copy(out, 32);
  out.set(m.ids, MANIFEST_HEADER_BYTES);
  const end = MANIFEST_HEADER_BYTES + m.ids.length;
  const trailer = mac ? macOf(MANIFEST_MAC_LABEL, mac, out.subarray(0, end)) : createHash('sha256').update(out.subarray(0, end)).digest();
  trailer.copy(out, end);
  m.trailer = Buffer.from(trailer);
  return out;
}

/**
 * Decode a manifest. Version 1 is checked against its SHA-256 (`authenticated` stays false: anyone
 * could have written it). Version 2 needs `mac`: the trailer must be the HMAC under `mac.key` of
 * `mac.binding` and the file, else EngineError 'ManifestAuthenticationFailed' (tampered, swapped,
 * moved to another recovery point or disk, or a key of another store). Without `mac`, a version-2
 * manifest is refused unless `unauthenticated` is set (inspection tools only: nothing is checked
 * beyond the structure).
 */
export function decodeManifest(data: Uint8Array, mac?: MacContext, options: { unauthenticated?: boolean } = {}): Manifest {
  const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const bad = (why: string): EngineError => new EngineError('ManifestCorrupted', `manifest is corrupted: ${why}`);
  if (b.length < MANIFEST_HEADER_BYTES + MANIFEST_TRAILER_BYTES) throw bad('too short');
  if (!b.subarray(0, 8).equals(MANIFEST_MAGIC)) throw bad('bad magic');
  const version = b.readUInt16LE(8);
  if (version !== MANIFEST_VERSION && version !== MANIFEST_VERSION_AUTH) throw bad(`unknown version ${version}`);
  const end = b.length - MANIFEST_TRAILER_BYTES;
  let authenticated = false;
  if (version === MANIFEST_VERSION) {
    const sum = createHash('sha256').update(b.subarray(0, end)).digest();
    if (!sum.equals(b.subarray(end))) throw bad('checksum mismatch');
  } else if (mac) {
    if (!macEqual(macOf(MANIFEST_MAC_LABEL, mac, b.subarray(0, end)), b.subarray(end))) {
      throw new EngineError('ManifestAuthenticationFailed', 'manifest authentication failed: it was changed, or belongs to another recovery point, item or disk');
    }
    authenticated = true;
  } else if (!options.unauthenticated) {
    throw new EngineError('ManifestAuthenticationFailed', 'manifest is authenticated (version 2): the store key and its binding are needed to read it');
  }
  const flags = b.readUInt16LE(10);
  if ((flags & ~KNOWN_FLAGS) !== 0) throw bad(`unknown flags ${flags}`);
  const chunkSize = b.readUInt32LE(12);
  const diskSize = Number(b.readBigUInt64LE(16));
  const count = Number(b.readBigUInt64LE(24));
  if (!Number.isSafeInteger(diskSize)) throw bad('disk size out of range');
  if (chunkSize === 0 || count !== Math.ceil(diskSize / chunkSize)) throw bad('chunk count does not match sizes');
  if (end - MANIFEST_HEADER_BYTES !== count * 32) throw bad('length does not match the chunk count');
  const ids = new Uint8Array(count * 32);
  ids.set(b.subarray(MANIFEST_HEADER_BYTES, end));
  const digest = flags & FLAG_IMAGE_DIGEST ? Buffer.from(b.subarray(32, 64)) : undefined;
  let m: Manifest;
  try {
    m = new Manifest(diskSize, chunkSize, ids, digest, flags & FLAG_BLAKE3 ? 'blake3' : 'sha256');
  } catch (err) {
    throw bad(err instanceof Error ? err.message : String(err));
  }
  m.version = version;
  m.authenticated = authenticated;
  m.trailer = Buffer.from(b.subarray(end));
  return m;
}

export interface WriteManifestOptions {
  /** Authenticate (version 2) under this key and binding. */
  mac?: MacContext | undefined;
  /** Never replace an existing file: EngineError 'AlreadyExists' instead (link(2)-based create). */
  exclusive?: boolean | undefined;
}

/**
 * Write a manifest durably (temp + fsync + rename/link + directory fsync): the commit point.
 * Returns the trailer (the MAC with `mac`), which callers may record to pin this exact file.
 */
export async function writeManifestFile(file: string, m: Manifest, options: WriteManifestOptions = {}): Promise<Buffer> {
  const data = encodeManifest(m, options.mac);
  if (options.exclusive) await writeFileExclusive(file, data);
  else await writeFileDurable(file, data);
  return Buffer.from(data.subarray(data.length - MANIFEST_TRAILER_BYTES));
}

export async function readManifestFile(file: string, mac?: MacContext): Promise<Manifest> {
  return decodeManifest(await fsp.readFile(file), mac);
}

/** Write a manifest as metadata object `name` of a store (atomic and durable there): the commit point. */
export async function writeManifest(store: Pick<ChunkStore, 'putMeta'>, name: string, m: Manifest, mac?: MacContext): Promise<void> {
  await store.putMeta(name, encodeManifest(m, mac));
}

/** Read manifest `name` of a store (`NotFound` ChunkStoreError when absent). */
export async function readManifest(store: Pick<ChunkStore, 'getMeta'>, name: string, mac?: MacContext): Promise<Manifest> {
  return decodeManifest(await store.getMeta(name), mac);
}
