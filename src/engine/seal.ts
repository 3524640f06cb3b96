/**
 * Per-store keys and chunk sealing (pure functions; the crypto worker runs these).
 *
 * - Chunk id = HMAC-SHA256(idKey, SHA-256(plaintext)): 32 bytes, lowercase hex as a name. Equal
 *   plaintexts give equal ids inside one store (dedup), and ids reveal nothing without `idKey`.
 *   Keying the plaintext's SHA-256 (rather than the plaintext) lets one hash pass give both the
 *   id and the chunk's contribution to the whole-image digest (FORMAT.md).
 * - Sealed chunk = header ‖ AES-256-GCM(sealKey, nonce, plaintext) ‖ tag, with the header and the
 *   chunk id as associated data: a chunk stored under another id fails authentication.
 *   Layout in FORMAT.md. Random 96-bit nonces: safe up to 2^32 chunks per key (16 PiB at 4 MiB).
 * - Keys are generated here and wrapped with a 32-byte master key (AES-256-GCM), so callers persist
 *   only the wrapped form.
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { blake3, blake3Available } from './blake3.js';
import { EngineError } from './errors.js';
import { nativeGcm } from './native.js';

/**
 * The hash of chunk plaintexts (FORMAT.md "Chunk ids"). `blake3` (native, SIMD: ≈ 4 GB/s per core
 * here against ≈ 1.3 GB/s for SHA-256 with SHA-NI) for every store created now; `sha256` for
 * stores created before it existed. One store uses one hash, so dedup works across its images.
 */
export type ChunkHash = 'sha256' | 'blake3';
export const CHUNK_HASHES: readonly ChunkHash[] = ['sha256', 'blake3'];

export interface StoreKeys {
  /** Key of the chunk id HMAC (32 bytes). */
  readonly idKey: Buffer;
  /** AES-256-GCM key that seals chunks (32 bytes). */
  readonly sealKey: Buffer;
  /** Hash of chunk plaintexts (absent: `sha256`, the stores of format v1). */
  readonly chunkHash?: ChunkHash;
}

/** The chunk hash a store's keys select. */
export function chunkHashOf(keys: { chunkHash?: ChunkHash | undefined }): ChunkHash {
  return keys.chunkHash ?? 'sha256';
}

export const CHUNK_ID_BYTES = 32;
export const SEAL_MAGIC = Buffer.from('RSVC', 'latin1');
export const SEAL_VERSION = 1;
export const SEAL_ALG_AES256GCM = 1;
export const SEAL_HEADER_BYTES = 20;
export const SEAL_TAG_BYTES = 16;
/** Sealed size = plaintext size + SEAL_OVERHEAD. */
export const SEAL_OVERHEAD = SEAL_HEADER_BYTES + SEAL_TAG_BYTES;

const WRAP_MAGIC = Buffer.from('RSVK', 'latin1');
const WRAP_AAD = Buffer.from('rsvault store keys v1', 'latin1');
/** Wrapped keys v1 (SHA-256 store): magic(4) version(1) nonce(12) ciphertext(64) tag(16). */
export const WRAPPED_KEYS_BYTES = 4 + 1 + 12 + 64 + 16;
/** Wrapped keys v2: as v1 with a 65-byte ciphertext (idKey ‖ sealKey ‖ chunk hash code). */
export const WRAPPED_KEYS_V2_BYTES = WRAPPED_KEYS_BYTES + 1;
const HASH_CODES: Record<ChunkHash, number> = { sha256: 0, blake3: 1 };

/** Encrypt in slices: Node allocates each update's output, and small outputs are far cheaper. */
const SLICE = 64 * 1024;

/**
 * New store keys. New stores hash chunks with BLAKE3 unless told otherwise — or unless this
 * platform has no BLAKE3 binding (blake3.ts), where they use SHA-256 rather than fail.
 */
export function generateStoreKeys(chunkHash: ChunkHash = blake3Available() ? 'blake3' : 'sha256'): StoreKeys {
  return { idKey: randomBytes(32), sealKey: randomBytes(32), chunkHash };
}

/** Keys as 64 bytes (idKey ‖ sealKey; SHA-256 stores) or 65 (‖ chunk hash code), for callers that seal them themselves. */
export function storeKeysToBytes(keys: StoreKeys): Buffer {
  const hash = chunkHashOf(keys);
  return hash === 'sha256' ? Buffer.concat([keys.idKey, keys.sealKey]) : Buffer.concat([keys.idKey, keys.sealKey, Buffer.from([HASH_CODES[hash]])]);
}

export function storeKeysFromBytes(raw: Uint8Array): StoreKeys {
  const b = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
  if (b.length === 64) return { idKey: Buffer.from(b.subarray(0, 32)), sealKey: Buffer.from(b.subarray(32, 64)) };
  const hash = CHUNK_HASHES.find((h) => HASH_CODES[h] === b[64]);
  if (b.length !== 65 || !hash) throw new EngineError('KeyUnwrapFailed', 'store keys are malformed or name an unknown chunk hash');
  return { idKey: Buffer.from(b.subarray(0, 32)), sealKey: Buffer.from(b.subarray(32, 64)), chunkHash: hash };
}

export function generateMasterKey(): Buffer {
  return randomBytes(32);
}

function checkKey(k: Uint8Array, what: string): void {
  if (k.length !== 32) throw new EngineError('InvalidArgument', `${what} must be 32 bytes, got ${k.length}`);
}

/** Wrap store keys under a 32-byte master key; store only the result. */
export function wrapStoreKeys(keys: StoreKeys, masterKey: Uint8Array): Buffer {
  checkKey(masterKey, 'master key');
  checkKey(keys.idKey, 'idKey');
  checkKey(keys.sealKey, 'sealKey');
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', masterKey, nonce);
  const plain = storeKeysToBytes(keys);
  const head = Buffer.concat([WRAP_MAGIC, Buffer.from([plain.length === 64 ? 1 : 2])]);
  c.setAAD(Buffer.concat([WRAP_AAD, head]));
  const ct = Buffer.concat([c.update(plain), c.final()]);
  return Buffer.concat([head, nonce, ct, c.getAuthTag()]);
}

export function unwrapStoreKeys(wrapped: Uint8Array, masterKey: Uint8Array): StoreKeys {
  checkKey(masterKey, 'master key');
  const w = Buffer.from(wrapped.buffer, wrapped.byteOffset, wrapped.byteLength);
  const version = w[4];
  const expected = version === 1 ? WRAPPED_KEYS_BYTES : version === 2 ? WRAPPED_KEYS_V2_BYTES : -1;
  if (w.length !== expected || !w.subarray(0, 4).equals(WRAP_MAGIC)) {
    throw new EngineError('KeyUnwrapFailed', 'wrapped store keys are malformed or of an unknown version');
  }
  const ctLen = w.length - 17 - 16;
  let pt: Buffer;
  try {
    const d = createDecipheriv('aes-256-gcm', masterKey, w.subarray(5, 17));
    d.setAAD(Buffer.concat([WRAP_AAD, w.subarray(0, 5)]));
    d.setAuthTag(w.subarray(17 + ctLen));
    pt = Buffer.concat([d.update(w.subarray(17, 17 + ctLen)), d.final()]);
  } catch (err) {
    throw new EngineError('KeyUnwrapFailed', 'wrapped store keys do not open with this master key', {}, { cause: err });
  }
  return storeKeysFromBytes(pt);
}

/** The chunk hash (SHA-256 or BLAKE3, 32 bytes) of a chunk's plaintext. */
export function chunkDigestOf(data: Uint8Array, hash: ChunkHash = 'sha256'): Buffer {
  return hash === 'blake3' ? blake3(data) : createHash('sha256').update(data).digest();
}

/** Chunk id from the plaintext's hash: HMAC-SHA256(idKey, digest). */
export function chunkIdFromDigest(idKey: Uint8Array, digest: Uint8Array): Buffer {
  return createHmac('sha256', idKey).update(digest).digest();
}

/** Chunk id of a plaintext: HMAC-SHA256(idKey, H(data)) → 32 bytes, H the store's chunk hash. */
export function chunkIdOf(idKey: Uint8Array, data: Uint8Array, hash: ChunkHash = 'sha256'): Buffer {
  return chunkIdFromDigest(idKey, chunkDigestOf(data, hash));
}

const zeroDigests = new Map<string, Buffer>();
/** Hash of `length` zero bytes (a hole's contribution to the image digest), cached. */
export function zeroChunkDigest(length: number, hash: ChunkHash = 'sha256'): Buffer {
  const key = `${hash}:${length}`;
  let d = zeroDigests.get(key);
  if (!d) {
    d = chunkDigestOf(Buffer.alloc(length), hash);
    if (zeroDigests.size > 16) zeroDigests.clear();
    zeroDigests.set(key, d);
  }
  return d;
}

/**
 * The whole-image digest of FORMAT.md: H over the concatenated H of every chunk (holes included)
 * in image order, H the manifest's chunk hash. `chunkDigests` holds count × 32 bytes.
 */
export function imageDigestOf(chunkDigests: Uint8Array, hash: ChunkHash = 'sha256'): Buffer {
  return chunkDigestOf(chunkDigests, hash);
}

function aad(header: Uint8Array, id: Uint8Array): Buffer {
  if (id.length !== CHUNK_ID_BYTES) throw new EngineError('InvalidArgument', 'chunk id must be 32 bytes');
  return Buffer.concat([header, id]);
}

/**
 * Seal `plain` into `out` (which must hold plain.length + SEAL_OVERHEAD bytes). Returns the sealed
 * length. `out` must not overlap `plain`.
 */
export function sealInto(sealKey: Uint8Array, id: Uint8Array, plain: Uint8Array, out: Uint8Array): number {
  const total = plain.length + SEAL_OVERHEAD;
  if (out.length < total) throw new EngineError('InvalidArgument', 'seal output buffer too small');
  const o = Buffer.from(out.buffer, out.byteOffset, total);
  SEAL_MAGIC.copy(o, 0);
  o[4] = SEAL_VERSION;
  o[5] = SEAL_ALG_AES256GCM;
  o[6] = 0;
  o[7] = 0;
  const nonce = randomBytes(12);
  nonce.copy(o, 8);
  const header = o.subarray(0, SEAL_HEADER_BYTES);
  if (nativeGcm) {
    // OpenSSL straight into `out` (native.ts): ≈ 2–3× node:crypto's update() + copy.
    nativeGcm.seal(sealKey, nonce, aad(header, id), plain, o.subarray(SEAL_HEADER_BYTES, total));
    return total;
  }
  const c = createCipheriv('aes-256-gcm', sealKey, nonce);
  c.setAAD(aad(header, id));
  let pos = SEAL_HEADER_BYTES;
  for (let off = 0; off < plain.length; off += SLICE) {
    const part = c.update(plain.subarray(off, Math.min(plain.length, off + SLICE)));
    part.copy(o, pos);
    pos += part.length;
  }
  const fin = c.final();
  fin.copy(o, pos);
  pos += fin.length;
  c.getAuthTag().copy(o, pos);
  return total;
}

export function seal(sealKey: Uint8Array, id: Uint8Array, plain: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(plain.length + SEAL_OVERHEAD);
  sealInto(sealKey, id, plain, out);
  return out;
}

/** Thrown by openInto when a sealed chunk fails authentication or is malformed. */
export class SealError extends Error {
  override readonly name = 'SealError';
}

/**
 * Open a sealed chunk into `out` (plaintext length = sealed.length - SEAL_OVERHEAD), verifying
 * the GCM tag with the id as associated data. Throws SealError on any mismatch. `out` may hold
 * garbage after a failure: callers only use it after success.
 */
export function openInto(sealKey: Uint8Array, id: Uint8Array, sealed: Uint8Array, out: Uint8Array): number {
  const s = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
  if (s.length < SEAL_OVERHEAD) throw new SealError('sealed chunk is truncated');
  if (!s.subarray(0, 4).equals(SEAL_MAGIC)) throw new SealError('sealed chunk has a bad magic');
  if (s[4] !== SEAL_VERSION || s[5] !== SEAL_ALG_AES256GCM) throw new SealError(`sealed chunk has unknown version ${s[4]}/${s[5]}`);
  const plainLen = s.length - SEAL_OVERHEAD;
  if (out.length < plainLen) throw new EngineError('InvalidArgument', 'open output buffer too small');
  const o = Buffer.from(out.buffer, out.byteOffset, plainLen);
  const header = s.subarray(0, SEAL_HEADER_BYTES);
  if (nativeGcm) {
    const body = s.subarray(SEAL_HEADER_BYTES, s.length - SEAL_TAG_BYTES);
    if (!nativeGcm.open(sealKey, s.subarray(8, 20), aad(header, id), body, s.subarray(s.length - SEAL_TAG_BYTES), o)) {
      throw new SealError('sealed chunk failed authentication (content or id mismatch)');
    }
    return plainLen;
  }
  try {
    const d = createDecipheriv('aes-256-gcm', sealKey, s.subarray(8, 20));
    d.setAAD(aad(header, id));
    d.setAuthTag(s.subarray(s.length - SEAL_TAG_BYTES));
    const body = s.subarray(SEAL_HEADER_BYTES, s.length - SEAL_TAG_BYTES);
    let pos = 0;
    for (let off = 0; off < body.length; off += SLICE) {
      const part = d.update(body.subarray(off, Math.min(body.length, off + SLICE)));
      part.copy(o, pos);
      pos += part.length;
    }
    const fin = d.final();
    fin.copy(o, pos);
  } catch (err) {
    if (err instanceof EngineError) throw err;
    throw new SealError('sealed chunk failed authentication (content or id mismatch)');
  }
  return plainLen;
}

/**
 * Open a sealed chunk in place: afterwards its plaintext is `sealed[SEAL_HEADER_BYTES ..
 * SEAL_HEADER_BYTES + plainLen)`. With the native addon nothing is copied (OpenSSL decrypts over
 * the ciphertext); without it the plaintext goes through a temporary buffer. Throws like
 * `openInto` (the bytes are then unspecified).
 */
export function openInPlace(sealKey: Uint8Array, id: Uint8Array, sealed: Uint8Array): number {
  const s = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
  // openInto checks the header; the native addon decrypts exactly in place (it reads the tag
  // first, and the body never reaches it).
  if (nativeGcm) return openInto(sealKey, id, s, s.subarray(SEAL_HEADER_BYTES));
  const out = Buffer.allocUnsafe(Math.max(0, s.length - SEAL_OVERHEAD));
  const n = openInto(sealKey, id, s, out);
  out.copy(s, SEAL_HEADER_BYTES, 0, n);
  return n;
}

export function open(sealKey: Uint8Array, id: Uint8Array, sealed: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(Math.max(0, sealed.length - SEAL_OVERHEAD));
  openInto(sealKey, id, sealed, out);
  return out;
}

/** Constant-time comparison of two ids. */
export function idsEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
