/**
 * Verify: prove that stored data can be restored.
 * - `verifyManifest`: every chunk of one manifest is present, opens (GCM tag with its id as
 *   associated data) and hashes back to its id; the whole-image digest, when the manifest has
 *   one, matches the image those chunks make up (order and holes included).
 * - `verifyStore`: every object in the store opens under its own id and hashes to it.
 * Problems are reported, not thrown, so one run lists them all.
 */
import { EngineError, type EngineErrorCode } from './errors.js';
import type { Manifest } from './manifest.js';
import { LentSlotPool, SlotPool, WorkerTaskError, sharedCryptoPool, type CryptoRunner } from './pool.js';
import { nativeGcm } from './native.js';
import { ProgressTracker, type ProgressListener } from './progress.js';
import { chunkError } from './restore.js';
import { SEAL_OVERHEAD, chunkHashOf, imageDigestOf, zeroChunkDigest, type StoreKeys } from './seal.js';
import { Semaphore } from './store-wrappers.js';
import { fetchInto, type ChunkStore } from './store.js';
import { TaskGroup } from './tasks.js';

export interface ChunkProblem {
  code: EngineErrorCode;
  chunkIndex: number;
  /** Byte offset of the chunk in the image. */
  offset: number;
  chunkId: string;
  message: string;
}

export interface ManifestVerifyReport {
  ok: boolean;
  chunksChecked: number;
  holes: number;
  problems: ChunkProblem[];
  /** 'absent': the manifest has no image digest (e.g. a bitmap incremental); 'unverifiable': chunks failed. */
  imageDigest: 'match' | 'mismatch' | 'absent' | 'unverifiable';
  durationMs: number;
}

export interface VerifyManifestOptions {
  store: ChunkStore;
  keys: StoreKeys;
  manifest: Manifest;
  onProgress?: ProgressListener;
  progressIntervalMs?: number;
  signal?: AbortSignal;
  pool?: CryptoRunner;
  readAhead?: number;
  /** Stop listing problems after this many (default 1000). */
  maxProblems?: number;
}

export async function verifyManifest(options: VerifyManifestOptions): Promise<ManifestVerifyReport> {
  const started = performance.now();
  const { store, keys, manifest: m } = options;
  const pool = options.pool ?? sharedCryptoPool();
  const window = Math.max(1, options.readAhead ?? pool.size * 2 + 2);
  const maxProblems = options.maxProblems ?? 1000;
  const progress = new ProgressTracker(m.diskSize, options.onProgress, options.progressIntervalMs);
  const inPool = new SlotPool(window, m.chunkSize + SEAL_OVERHEAD);
  // Native GCM: open in place in the shared input slot (as restore does); else ordinary output slots.
  const inPlace = nativeGcm !== undefined;
  const outPool = new LentSlotPool(inPlace ? 1 : window, m.chunkSize);
  const chunkDigests = m.imageDigest ? new Uint8Array(m.chunkCount * 32) : undefined;
  const report: ManifestVerifyReport = { ok: true, chunksChecked: 0, holes: 0, problems: [], imageDigest: m.imageDigest ? 'match' : 'absent', durationMs: 0 };
  const tasks = new TaskGroup();

  for (let i = 0; i < m.chunkCount && tasks.failure === undefined; i++) {
    if (options.signal?.aborted) {
      tasks.failure = new EngineError('Aborted', 'verify aborted');
      break;
    }
    const len = m.lengthOf(i);
    if (m.isHole(i)) {
      report.holes++;
      chunkDigests?.set(zeroChunkDigest(len, m.chunkHash), i * 32);
      progress.add(len);
      continue;
    }
    const inSlot = await inPool.acquire();
    const outSlot = inPlace ? undefined : await outPool.acquire();
    const task = (async (): Promise<void> => {
      try {
        const got = await fetchInto(store, m.idHex(i), inPool.buffer(inSlot));
        if (got !== len + SEAL_OVERHEAD) {
          throw new WorkerTaskError('SealError', `stored size ${got}, expected ${len + SEAL_OVERHEAD}`);
        }
        const common = { sealKey: keys.sealKey, idKey: keys.idKey, hash: m.chunkHash, id: m.idAt(i), src: inPool.ref(inSlot, got) };
        const r = await pool.run(outSlot === undefined ? { op: 'openInPlace', ...common } : { op: 'open', ...common, dst: outPool.ref(outSlot, len) });
        if (outSlot !== undefined) outPool.adopt(outSlot, r.out);
        if (r.digest) chunkDigests?.set(r.digest, i * 32);
        report.chunksChecked++;
      } catch (err) {
        const e = chunkError(err, m, i, 'verify');
        if (e.code !== 'UserErrorChunkCorrupted' && e.code !== 'UserErrorChunkMissing') throw e;
        report.ok = false;
        if (report.problems.length < maxProblems) {
          report.problems.push({ code: e.code, chunkIndex: i, offset: m.offsetOf(i), chunkId: m.idHex(i), message: e.message });
        }
      } finally {
        inPool.release(inSlot);
        if (outSlot !== undefined) outPool.release(outSlot);
        progress.add(len);
      }
    })();
    tasks.add(task);
  }
  await tasks.settle();
  // Every request naming a slot has finished: the slot memory serves the next job (pool.ts).
  inPool.dispose();
  outPool.dispose();
  if (tasks.failure !== undefined) throw tasks.failure;
  report.problems.sort((a, b) => a.chunkIndex - b.chunkIndex);
  if (chunkDigests && m.imageDigest) {
    if (report.problems.length > 0) report.imageDigest = 'unverifiable';
    else if (!imageDigestOf(chunkDigests, m.chunkHash).equals(m.imageDigest)) {
      report.imageDigest = 'mismatch';
      report.ok = false;
    }
  }
  report.durationMs = performance.now() - started;
  progress.finish();
  return report;
}

export interface StoreVerifyReport {
  ok: boolean;
  objectsChecked: number;
  bytesChecked: number;
  bad: Array<{ chunkId: string; message: string }>;
  durationMs: number;
}

export interface VerifyStoreOptions {
  store: ChunkStore;
  keys: StoreKeys;
  onProgress?: ProgressListener;
  signal?: AbortSignal;
  pool?: CryptoRunner;
  concurrency?: number;
  /** Largest plaintext chunk expected (default 64 MiB); bigger objects are reported bad. */
  maxChunkSize?: number;
}

/** Check every object of a store: opens under its own id and hashes back to it. */
export async function verifyStore(options: VerifyStoreOptions): Promise<StoreVerifyReport> {
  const started = performance.now();
  const { store, keys } = options;
  const pool = options.pool ?? sharedCryptoPool();
  const concurrency = Math.max(1, options.concurrency ?? pool.size * 2 + 2);
  const maxChunk = options.maxChunkSize ?? 64 * 1024 * 1024;
  const sem = new Semaphore(concurrency);
  const report: StoreVerifyReport = { ok: true, objectsChecked: 0, bytesChecked: 0, bad: [], durationMs: 0 };
  const progress = new ProgressTracker(0, options.onProgress);
  const tasks = new TaskGroup();
  for await (const id of store.list()) {
    if (tasks.failure !== undefined) break;
    if (options.signal?.aborted) throw new EngineError('Aborted', 'verify aborted');
    await sem.acquire();
    const task = (async () => {
      try {
        let sealed: Buffer;
        try {
          sealed = await store.get(id);
        } catch (err) {
          if (err instanceof Error && 'kind' in err && err.kind === 'NotFound') return; // deleted meanwhile
          throw err;
        }
        report.objectsChecked++;
        report.bytesChecked += sealed.length;
        progress.add(sealed.length);
        if (sealed.length < SEAL_OVERHEAD || sealed.length - SEAL_OVERHEAD > maxChunk) {
          report.ok = false;
          report.bad.push({ chunkId: id, message: `object size ${sealed.length} is not a sealed chunk` });
          return;
        }
        // Per-task buffers (sizes vary per object), transferred to the worker: ordinary memory,
        // because copying into shared memory is slow in V8 (see crypto-ops.ts).
        const src = new ArrayBuffer(sealed.length);
        Buffer.from(src).set(sealed);
        const dst = new ArrayBuffer(Math.max(1, sealed.length - SEAL_OVERHEAD));
        try {
          await pool.run({
            op: 'open',
            sealKey: keys.sealKey,
            idKey: keys.idKey,
            hash: chunkHashOf(keys),
            id: Buffer.from(id, 'hex'),
            src: { sab: src, off: 0, len: sealed.length },
            dst: { sab: dst, off: 0, len: sealed.length - SEAL_OVERHEAD },
          });
        } catch (err) {
          if (!(err instanceof WorkerTaskError && err.isSealError)) throw err;
          report.ok = false;
          report.bad.push({ chunkId: id, message: `chunk ${id} is corrupted: ${err.message}` });
        }
      } finally {
        sem.release();
      }
    })();
    tasks.add(task);
  }
  await tasks.settle();
  if (tasks.failure !== undefined) throw tasks.failure;
  report.durationMs = performance.now() - started;
  progress.finish();
  return report;
}
