/**
 * The chunk store: content-addressed, immutable objects named by a chunk id.
 *
 * ## Contract (every backend; checked by `runChunkStoreConformance`)
 * - Ids are 64 lowercase hex characters (a 32-byte chunk id). Any other id is rejected with a
 *   `Permanent` ChunkStoreError before touching the backend.
 * - Objects are immutable: the same id always names the same plaintext (the engine guarantees this
 *   because ids are keyed hashes of the plaintext). Two writers racing on one id are therefore
 *   harmless: either copy is valid, and the backend may keep either.
 * - `putIfAbsent(id, data)`: stores `data` under `id` unless it exists. Returns `true` if this call
 *   wrote it, `false` if it existed already, in which case the existing object is **touched**
 *   (its modification time becomes now), exactly like `touch`. When it resolves, the object is
 *   complete under its name and its bytes are durable; a reader never sees a partial object
 *   (fs: temp file + fdatasync + rename). The *name* becomes durable at the latest after `sync()`.
 *   `options.onDataTaken`, when given, is called once the backend no longer needs `data` (it may
 *   be long before the put resolves: the fs backend calls it when the bytes are in the page cache
 *   and flushes them afterwards), so a caller can reuse its buffer while durability completes.
 *   A backend that cannot tell simply never calls it; callers then reuse `data` after the put.
 * - `get(id)`: the whole object, or `NotFound`.
 * - `has(id)`: existence, no other effect a caller can observe.
 * - `touch(id)`: sets the modification time to now; `false` if the object does not exist. Backups
 *   touch every chunk they re-reference; GC's mark phase touches every live chunk; GC's sweep only
 *   removes objects older than its cutoff. That is what makes GC safe next to running backups.
 * - `stat(id)`: size and modification time (ms since epoch), or `NotFound`.
 * - `list()`: every committed id, each once, in no particular order; objects written or deleted
 *   while listing may or may not appear. Temporary/partial objects never appear.
 * - `delete(id, {unmodifiedSince})`: removes the object; with `unmodifiedSince` only if its
 *   modification time is strictly before that instant, decided atomically with respect to
 *   `touch`/`putIfAbsent` (a touch that wins the race keeps the object; a touch that loses sees
 *   it absent and returns `false`, so its caller writes it again). Returns what happened.
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
  /** Last modification (write or touch), ms since the Unix epoch. */
  mtimeMs: number;
}

export type DeleteResult = 'deleted' | 'kept' | 'absent';

export interface DeleteOptions {
  /** Delete only if the object's modification time is strictly before this instant. */
  unmodifiedSince?: Date;
}

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
  delete(id: string, options?: DeleteOptions): Promise<DeleteResult>;
  sync(): Promise<void>;
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

/**
 * A touch stores the time as a double number of seconds that libuv truncates to nanoseconds, so
 * an mtime read back can be a fraction of a microsecond *before* the millisecond of the touch
 * (…123 ms → …122.9999 ms). Anything compared with a cutoff (GC's sweep, a conditional delete)
 * counts as modified since the cutoff when within this slack of it — the safe direction; seen
 * with `safetyMarginMs: 0` in the crash test.
 */
export const MTIME_SLACK_MS = 1;

const ID_RE = /^[0-9a-f]{64}$/;

export function isChunkId(id: string): boolean {
  return ID_RE.test(id);
}

export function assertChunkId(id: string): void {
  if (!ID_RE.test(id)) throw new ChunkStoreError('Permanent', `invalid chunk id ${JSON.stringify(id)}`);
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
