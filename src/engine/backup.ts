/**
 * Image backup: fixed-size chunks → holes / ids → sealed objects in a chunk store → manifest.
 *
 * Pipeline (memory bounded by two shared-memory slot pools, never by the image):
 * 1. The main thread reads chunk after chunk into a free input slot (one sequential reader).
 * 2. A worker checks for all zeros (→ hole), computes the id (HMAC of the SHA-256) and, when the chunk is
 *    probably new (no previous manifest), seals it right away into an output slot — one pass of
 *    each algorithm, no copies.
 * 3. The main thread `touch`es the id: present → reused (and protected from a running GC); absent
 *    → sealed (if not yet) and `putIfAbsent`.
 * 4. With a valid changed-block bitmap and a previous manifest, chunks without a dirty block are
 *    not read at all: their ids are copied from the previous manifest (and touched; a chunk that
 *    vanished is read and stored again).
 * 5. When every chunk is in, `store.sync()` makes them durable; the caller then commits the
 *    manifest (`writeManifestFile`). A crash before that leaves only unreferenced chunks.
 * Each chunk is hashed once (SHA-256); the id is the HMAC of that hash and the whole-image digest
 * is the SHA-256 of all chunk hashes in order (FORMAT.md), so full reads get it for free.
 */
import { EngineError, asEngineError } from './errors.js';
import { Manifest, checkChunkSize } from './manifest.js';
import { ChangedBlockBitmap } from './bitmap.js';
import { InlineCrypto, LentSlotPool, SlotPool, sharedCryptoPool, type CryptoRunner } from './pool.js';
import { ProgressTracker, type ProgressListener } from './progress.js';
import { SEAL_OVERHEAD, chunkHashOf, imageDigestOf, zeroChunkDigest, type StoreKeys } from './seal.js';
import { openFileSource, type ImageSource } from './snapshot.js';
import { Semaphore } from './store-wrappers.js';
import type { ChunkStore } from './store.js';
import { TaskGroup } from './tasks.js';

export const DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024;
/** Alignment of sealed-chunk slots, for stores that write with O_DIRECT (PutOptions.alignedTail). */
const OUT_ALIGN = 4096;

export interface BackupOptions {
  store: ChunkStore;
  keys: StoreKeys;
  /** A file path (read as is) or an ImageSource such as a Snapshot. */
  source: string | ImageSource;
  /**
   * Chunk size in bytes, a multiple of 64 KiB (default: the previous manifest's, else 4 MiB — an
   * incremental at another chunk size could neither use the bitmap nor dedup against `previous`).
   */
  chunkSize?: number;
  /** The previous manifest of the same disk: enables bitmap incrementals and lazy sealing. */
  previous?: Manifest;
  /** Blocks written since `previous` was taken. Only used together with `previous`. */
  bitmap?: ChangedBlockBitmap;
  /** Record the whole-image digest on full reads (default true; costs nothing extra: see FORMAT.md). */
  imageDigest?: boolean;
  onProgress?: ProgressListener;
  progressIntervalMs?: number;
  signal?: AbortSignal;
  /** Worker pool (default: the shared one, sized to the cores). */
  pool?: CryptoRunner;
  /**
   * A bitmap incremental with at most this many bytes to read hashes and seals on the calling
   * thread instead of starting workers (default 64 MiB; 0 = always use workers).
   */
  inlineBelowBytes?: number;
  /** Chunks being sealed or uploaded at once, beyond the workers' own (default 4). */
  putConcurrency?: number;
  /** Chunks read ahead of the workers (default 2 × workers + 2). */
  readAhead?: number;
}

export interface BackupStats {
  startedAt: Date;
  bytesTotal: number;
  /** Bytes read from the source. */
  bytesRead: number;
  /** Plaintext bytes of chunks this backup stored. */
  bytesNew: number;
  /** Sealed bytes written to the store. */
  bytesStored: number;
  /** Plaintext bytes of chunks that were already in the store. */
  bytesReused: number;
  bytesHoles: number;
  chunksTotal: number;
  chunksNew: number;
  chunksReused: number;
  holes: number;
  /** True when a changed-block bitmap limited the reads. */
  usedBitmap: boolean;
  durationMs: number;
}

export interface BackupResult {
  manifest: Manifest;
  stats: BackupStats;
}

export async function backupImage(options: BackupOptions): Promise<BackupResult> {
  const started = performance.now();
  const startedAt = new Date();
  const { store, keys, signal } = options;
  const hash = chunkHashOf(keys);
  // A previous manifest under another chunk hash (a store's hash never changes, so only a caller
  // mixing stores gets here) has ids this backup cannot produce: read everything instead.
  const previous = options.previous?.chunkHash === hash ? options.previous : undefined;
  const chunkSize = options.chunkSize ?? previous?.chunkSize ?? DEFAULT_CHUNK_SIZE;
  checkChunkSize(chunkSize);
  const ownSource = typeof options.source === 'string';
  const source = typeof options.source === 'string' ? await openFileSource(options.source) : options.source;
  try {
    const size = source.size;
    const count = Math.ceil(size / chunkSize);
    const bitmap = options.bitmap;
    if (bitmap && bitmap.diskSize !== size) {
      throw new EngineError('InvalidArgument', `bitmap covers ${bitmap.diskSize} bytes, the image has ${size}`);
    }
    const useBitmap = !!(bitmap && previous && previous.chunkSize === chunkSize);
    let dirtyBytes = 0;
    if (useBitmap && previous && bitmap) {
      for (let i = 0; i < count; i++) {
        const off = i * chunkSize;
        const len = Math.min(chunkSize, size - off);
        if (i >= previous.chunkCount || previous.lengthOf(i) !== len || bitmap.isRangeDirty(off, len)) dirtyBytes += len;
      }
    }
    const inline = useBitmap && dirtyBytes <= (options.inlineBelowBytes ?? 64 * 1024 * 1024);
    const pool: CryptoRunner = options.pool ?? (inline ? new InlineCrypto() : sharedCryptoPool());
    // Workers not booted yet (the first job of a process): the calling thread hashes and seals the
    // first chunks itself while they boot, so reads and store writes start at once instead of after
    // the boot (≈ 0.1–0.3 s of a 1 GiB full backup on the reference VM: bench/README.md).
    const bootRunner = pool.ready === false ? new InlineCrypto() : undefined;
    pool.warm?.();
    const runner = (): CryptoRunner => (bootRunner && pool.ready === false ? bootRunner : pool);
    // Per-chunk SHA-256s for the whole-image digest (32 B per chunk, like the ids); only on full reads.
    const chunkDigests = (options.imageDigest ?? true) && !useBitmap ? new Uint8Array(count * 32) : undefined;
    // Seal in the hashing visit when the chunk is probably new: always on a full backup, and on a
    // bitmap incremental, which reads only chunks the guest wrote (one visit and one existence
    // check — putIfAbsent's — instead of hash, touch, seal). Without a bitmap, most chunks a backup
    // with a previous manifest reads are unchanged: it seals only those `touch` finds absent.
    const eagerSeal = !previous || useBitmap;
    const putConcurrency = options.putConcurrency ?? 4;
    const inPool = new SlotPool(Math.max(2, options.readAhead ?? pool.size * 2 + 2), chunkSize);
    // Output slots aligned for O_DIRECT (with the native addon): a store can write them without a page-cache copy.
    const outPool = new LentSlotPool(putConcurrency + pool.size, chunkSize + SEAL_OVERHEAD, OUT_ALIGN);
    const touchSem = new Semaphore(32);
    const ids = new Uint8Array(count * 32);
    const progress = new ProgressTracker(size, options.onProgress, options.progressIntervalMs);
    const stats: BackupStats = {
      startedAt,
      bytesTotal: size,
      bytesRead: 0,
      bytesNew: 0,
      bytesStored: 0,
      bytesReused: 0,
      bytesHoles: 0,
      chunksTotal: count,
      chunksNew: 0,
      chunksReused: 0,
      holes: 0,
      usedBitmap: useBitmap,
      durationMs: 0,
    };

    const tasks = new TaskGroup();
    const reused = (len: number): void => {
      stats.chunksReused++;
      stats.bytesReused += len;
    };

    /** Steps 2–3 for one chunk already read into `slot`. */
    const processChunk = async (i: number, slot: number, len: number, releaseIn: () => void): Promise<void> => {
      let outSlot: number | undefined;
      let inReleased = false;
      try {
        if (eagerSeal) outSlot = await outPool.acquire();
        const r = await runner().run({
          op: 'hash',
          idKey: keys.idKey,
          hash,
          src: inPool.ref(slot, len),
          ...(outSlot !== undefined ? { sealKey: keys.sealKey, dst: outPool.ref(outSlot, len + SEAL_OVERHEAD) } : {}),
        });
        if (outSlot !== undefined) outPool.adopt(outSlot, r.out);
        if (r.zero) {
          stats.holes++;
          stats.bytesHoles += len;
          chunkDigests?.set(zeroChunkDigest(len, hash), i * 32);
          return;
        }
        if (!r.id || !r.digest) throw new Error('worker returned no id');
        chunkDigests?.set(r.digest, i * 32);
        const id = Buffer.from(r.id);
        ids.set(id, i * 32);
        const hex = id.toString('hex');
        let sealedLen = r.sealedLen;
        if (sealedLen === undefined || outSlot === undefined) {
          // Not sealed yet (a previous manifest makes new chunks unlikely): seal only if absent.
          // An eagerly sealed chunk goes straight to putIfAbsent, which touches an existing
          // object and reports it, like `touch` (store contract) — one existence check, not two.
          if (await store.touch(hex)) {
            reused(len);
            return;
          }
          outSlot = await outPool.acquire();
          const s = await runner().run({ op: 'seal', sealKey: keys.sealKey, id, src: inPool.ref(slot, len), dst: outPool.ref(outSlot, len + SEAL_OVERHEAD) });
          outPool.adopt(outSlot, s.out);
          sealedLen = s.sealedLen ?? 0;
        }
        releaseIn();
        inReleased = true;
        const sealedSlot = outSlot;
        const taken = (): void => {
          if (outSlot === undefined) return;
          outSlot = undefined;
          outPool.release(sealedSlot);
        };
        // The output slot goes back as soon as the store has the bytes (onDataTaken), while the
        // store flushes them: the next chunk is sealed into it meanwhile.
        if (await store.putIfAbsent(hex, outPool.buffer(sealedSlot, sealedLen), { onDataTaken: taken, ...(outPool.aligned ? { alignedTail: OUT_ALIGN } : {}) })) {
          stats.chunksNew++;
          stats.bytesNew += len;
          stats.bytesStored += sealedLen;
        } else {
          reused(len);
        }
      } finally {
        if (!inReleased) releaseIn();
        if (outSlot !== undefined) outPool.release(outSlot);
        progress.add(len);
      }
    };

    /** Step 1: read chunk i (awaits only the read), then hand it to processChunk. */
    const readChunk = async (i: number): Promise<void> => {
      const off = i * chunkSize;
      const len = Math.min(chunkSize, size - off);
      const slot = await inPool.acquire();
      let n: number;
      try {
        n = await source.read(inPool.buffer(slot, len), off);
      } catch (err) {
        inPool.release(slot);
        throw err;
      }
      if (n !== len) {
        inPool.release(slot);
        throw new EngineError('SourceChanged', `short read at offset ${off}: ${n} of ${len} bytes (did the image shrink?)`, { offset: off, chunkIndex: i });
      }
      stats.bytesRead += len;
      tasks.add(processChunk(i, slot, len, () => inPool.release(slot)));
    };

    const isClean = (i: number, off: number, len: number): boolean =>
      !!(useBitmap && previous && bitmap && i < previous.chunkCount && previous.lengthOf(i) === len && !bitmap.isRangeDirty(off, len));
    // With a bitmap the dirty chunks go first, clean ones second: the dirty chunks' reads, seals and
    // puts (each ends with an fdatasync, behind the caller) then run while the clean ones are
    // touched, instead of the last dirty chunk's put starting after most of the touches.
    for (const cleanPass of useBitmap ? [false, true] : [false]) {
      for (let i = 0; i < count && tasks.failure === undefined; i++) {
        if (signal?.aborted) {
          tasks.failure = new EngineError('Aborted', 'backup aborted');
          break;
        }
        const off = i * chunkSize;
        const len = Math.min(chunkSize, size - off);
        const clean = isClean(i, off, len);
        if (clean !== cleanPass) continue;
        if (clean && previous) {
          if (previous.isHole(i)) {
            stats.holes++;
            stats.bytesHoles += len;
            progress.add(len);
            continue;
          }
          const id = previous.idAt(i);
          await touchSem.acquire();
          tasks.add(
            (async () => {
              try {
                if (await store.touch(id.toString('hex'))) {
                  ids.set(id, i * 32);
                  reused(len);
                  progress.add(len);
                } else {
                  await readChunk(i);
                }
              } finally {
                touchSem.release();
              }
            })(),
          );
          continue;
        }
        try {
          await readChunk(i);
        } catch (err) {
          tasks.failure ??= err;
        }
      }
    }
    await tasks.settle();
    // Every request naming a slot has finished: the slot memory serves the next job (pool.ts).
    inPool.dispose();
    outPool.dispose();
    if (tasks.failure !== undefined) throw asEngineError(tasks.failure, 'backup failed');
    await store.sync();
    const imageDigest = chunkDigests ? imageDigestOf(chunkDigests, hash) : undefined;
    stats.durationMs = performance.now() - started;
    progress.finish();
    return { manifest: new Manifest(size, chunkSize, ids, imageDigest, hash), stats };
  } catch (err) {
    throw asEngineError(err, 'backup failed');
  } finally {
    if (ownSource) await source.close();
  }
}
