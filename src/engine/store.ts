/**
 * The chunk store: content-addressed, immutable objects named by a chunk id, plus a small
 * namespace of named metadata objects (manifests, GC state) that live with the chunks.
 *
 * ## Contract (every backend; checked by `runChunkStoreConformance`)
 * - Ids are 64 lowercase hex characters (a 32-byte chunk id). Any other id is rejected with a
 *   `Permanent` ChunkStoreError before touching the backend.
 * - Objects are immutable: the same id always names the same plaintext (the engine guarantees this
 *   because ids are keyed hashes of the plaintext). Two writers racing on one id are therefore
 *   harmless: either copy is valid, and the backend may keep either.
 * - `putIfAbsent(id, data)`: stores `data` under `id` unless it exists (a conditional put where the
 *   service has one: If-None-Match: *). Returns `true` if this call wrote it, `false` if it existed
 *   already. When it resolves, the object is complete under its name and its bytes are durable; a
 *   reader never sees a partial object (fs: temp file + fdatasync + rename; object stores: one
 *   atomic PUT). The *name* becomes durable at the latest after `sync()`.
 *   `options.onDataTaken`, when given, is called once the backend no longer needs `data` (it may
 *   be long before the put resolves: the fs backend calls it when the bytes are in the page cache
 *   and flushes them afterwards), so a caller can reuse its buffer while durability completes.
 *   A backend that cannot tell simply never calls it; callers then reuse `data` after the put.
 * - `get(id)`: the whole object, or `NotFound`.
 * - `has(id)`: existence.
 * - `touch(id)`: `has` for a chunk a backup re-references (the fs store also refreshes its
 *   mtime, for operators; nothing depends on modification times any more).
 * - `stat(id)`: size and last modification as the backend reports it (informational), or `NotFound`.
 * - `list()`: every committed id, each once, in no particular order; objects written or deleted
 *   while listing may or may not appear. Temporary/partial objects and fossils never appear.
 * - `delete(id)`: removes the object (unconditional; GC never deletes a live chunk, it fossilizes).
 * - **Fossils** (GC's two-step delete; see gc.ts): `fossilize(id)` moves a chunk out of the live
 *   namespace into the fossil namespace (`false` if it was not live); `listFossils()`;
 *   `deleteFossil(id)`; `resurrect(id)` copies a fossil back to the live name (`true` if the chunk
 *   is live afterwards; the fossil itself is left to GC). Every read that misses a live chunk
 *   (`get`, `readInto`, `has`, `touch`, `stat`) resurrects it first, so a chunk GC fossilized
 *   under a backup that still used it is never lost before GC's next generation decides.
 *   `putIfAbsent` of a fossilized id makes the chunk live again (object stores write it anew, the
 *   fs store resurrects it; either is fine: the bytes are the same).
 * - **Metadata objects**: `putMeta(name, data)` replaces `name` atomically and durably (a reader
 *   sees the old or the new bytes, never a mix); `getMeta` (or `NotFound`); `listMeta(prefix)`
 *   yields every name starting with `prefix`; `deleteMeta` (`false` if absent). Names are
 *   `/`-separated segments of `[A-Za-z0-9_-][A-Za-z0-9._-]*` (checked: `Permanent` otherwise).
 * - `sync()`: makes every completed `putIfAbsent` durable by name (fs: fsync of the directories
 *   touched). Call before committing anything that references the chunks.
 * - Errors: `ChunkStoreError` with `kind` `NotFound | Transient | Permanent`; nothing else escapes.
 * - Methods may be called concurrently; a backend limits nothing itself (wrap it with
 *   `withConcurrencyLimit`).
 */
import { ChunkStoreError } from './errors.js';

export interface ChunkStat {
  /** Stored (sealed) size in bytes. */
  size: number;
  /** Last modification as the backend reports it, ms since the Unix epoch (informational only). */
  mtimeMs: number;
}

export type DeleteResult = 'deleted' | 'absent';

export interface PutOptions {
  /** Called (at most once) when the backend no longer reads `data`; see the contract above. */
  onDataTaken?: () => void;
  /**
   * A hint for backends that write with O_DIRECT: `data` may start at an address aligned to this
   * many bytes (a power of two), and `data.buffer` then extends at least to the next multiple of it
   * after `data`'s end; the backend may overwrite those tail bytes (padding). Ignored by others.
   */
  alignedTail?: number;
}

export interface ChunkStore {
  /** Human-readable description (backend and location), for logs. */
  readonly description: string;
  putIfAbsent(id: string, data: Uint8Array, options?: PutOptions): Promise<boolean>;
  get(id: string): Promise<Buffer>;
  has(id: string): Promise<boolean>;
  touch(id: string): Promise<boolean>;
  stat(id: string): Promise<ChunkStat>;
  list(): AsyncIterable<string>;
  delete(id: string): Promise<DeleteResult>;
  sync(): Promise<void>;
  fossilize(id: string): Promise<boolean>;
  resurrect(id: string): Promise<boolean>;
  listFossils(): AsyncIterable<string>;
  deleteFossil(id: string): Promise<boolean>;
  putMeta(name: string, data: Uint8Array): Promise<void>;
  getMeta(name: string): Promise<Buffer>;
  listMeta(prefix: string): AsyncIterable<string>;
  deleteMeta(name: string): Promise<boolean>;
  /**
   * Optional fast path of `get`: read the object into `target` (no allocation) and return its
   * size. If the object is larger than `target`, its size is returned and `target`'s content is
   * unspecified (callers that know the expected size treat that as a mismatch). Errors as `get`.
   */
  readInto?(id: string, target: Uint8Array): Promise<number>;
  /**
   * Optional housekeeping: remove leftovers of interrupted writes (temp objects) older than the
   * given instant. Returns how many were removed. GC calls it when present.
   */
  removeStaleTemporaries?(olderThan: Date): Promise<number>;
}

const ID_RE = /^[0-9a-f]{64}$/;

export function isChunkId(id: string): boolean {
  return ID_RE.test(id);
}

export function assertChunkId(id: string): void {
  if (!ID_RE.test(id)) throw new ChunkStoreError('Permanent', `invalid chunk id ${JSON.stringify(id)}`);
}

const META_SEGMENT = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/;

export function isMetaName(name: string): boolean {
  return name.length > 0 && name.length <= 512 && name.split('/').every((seg) => META_SEGMENT.test(seg));
}

export function assertMetaName(name: string): void {
  if (!isMetaName(name)) throw new ChunkStoreError('Permanent', `invalid metadata name ${JSON.stringify(name)}`);
}

/** A `listMeta` prefix: '' or whole segments followed by '/', or a name prefix (checked loosely). */
export function assertMetaPrefix(prefix: string): void {
  if (prefix !== '' && !/^[A-Za-z0-9._/-]+$/.test(prefix)) throw new ChunkStoreError('Permanent', `invalid metadata prefix ${JSON.stringify(prefix)}`);
  if (prefix.split('/').some((seg) => seg === '..' || seg === '.')) throw new ChunkStoreError('Permanent', `invalid metadata prefix ${JSON.stringify(prefix)}`);
}

/**
 * Read object `id` into `target` using the store's `readInto` fast path when it has one, else
 * `get` + copy. Returns the object size, as `readInto` does (> target.length: not read).
 */
export async function fetchInto(store: ChunkStore, id: string, target: Uint8Array): Promise<number> {
  if (store.readInto) return store.readInto(id, target);
  const data = await store.get(id);
  if (data.length <= target.length) target.set(data);
  return data.length;
}
