/**
 * Restore: stream a manifest's chunks to a target file.
 *
 * Chunks are fetched with read-ahead (`readAhead` gets in flight), opened in worker threads
 * (AES-256-GCM with the chunk id as associated data: a corrupted or swapped chunk fails) and
 * written with positioned writes. Holes are never written: the file is sized with truncate
 * first, so they stay sparse. Everything goes to `<target>.partial`, fsynced and renamed over
 * `target` only on success, so a target never looks complete after a failure. The whole-image
 * digest is checked by verify, not here (a second hash pass would halve restore speed).
 */
import { constants as fsc, promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { EngineError, asEngineError, isNotFound } from './errors.js';
import { fsyncDir } from './fs-store.js';
import type { Manifest } from './manifest.js';
import { InlineCrypto, LentSlotPool, SlotPool, WorkerTaskError, sharedCryptoPool, type CryptoRunner } from './pool.js';
import { ProgressTracker, type ProgressListener } from './progress.js';
import { nativeGcm } from './native.js';
import { SEAL_HEADER_BYTES, SEAL_OVERHEAD, open as openSealed, type StoreKeys } from './seal.js';
import { fetchInto, type ChunkStore } from './store.js';
import { TaskGroup } from './tasks.js';

export interface RestoreOptions {
  store: ChunkStore;
  keys: StoreKeys;
  manifest: Manifest;
  /** Target file path. Written via `<target>.partial`. */
  target: string;
  onProgress?: ProgressListener;
  progressIntervalMs?: number;
  signal?: AbortSignal;
  pool?: CryptoRunner;
  /** Chunks fetched ahead (default 2 × workers + 4). */
  readAhead?: number;
  /** fsync the target before the rename (default true). */
  fsync?: boolean;
  /**
   * With `fsync`, start a background `fdatasync` after every this many bytes written (default
   * 64 MiB; 0 = only the final fsync). The kernel does not start writeback on its own until the
   * dirty-page threshold (10% of RAM), so without this the whole image is written back by the
   * final fsync, after decryption has finished; flushing as we go overlaps the two. The final
   * fsync before the rename is always done.
   */
  flushEveryBytes?: number;
  /**
   * Write whole, aligned chunks with O_DIRECT (default true; needs the native addon, which aligns
   * the slots): the plaintext goes from the slot to the device without a page-cache copy, which cost
   * more CPU than decrypting (bench/README.md). A filesystem that refuses it gets buffered writes.
   */
  directIO?: boolean;
}

/** O_DIRECT granularity of the target (the page size: a multiple of every usual logical block size). */
const DIRECT_ALIGN = 4096;
/** Sealed chunks are read this far into their slot, so that the plaintext (after the header) is aligned. */
const DIRECT_LEAD = DIRECT_ALIGN - SEAL_HEADER_BYTES;

export interface RestoreStats {
  bytesTotal: number;
  bytesWritten: number;
  chunks: number;
  holes: number;
  durationMs: number;
  /** Chunks written with O_DIRECT (the others through the page cache). */
  directWrites?: number;
}

/** The target opened a second time with O_DIRECT, or undefined where the filesystem refuses it. */
async function openDirect(file: string): Promise<FileHandle | undefined> {
  try {
    return await fsp.open(file, fsc.O_WRONLY | fsc.O_DIRECT);
  } catch (err) {
    if ((err as { code?: unknown }).code === 'EINVAL') return undefined;
    throw err;
  }
}

export function chunkError(err: unknown, m: Manifest, i: number, context: string): EngineError {
  const offset = m.offsetOf(i);
  const chunkId = m.idHex(i);
  if (isNotFound(err)) {
    return new EngineError('UserErrorChunkMissing', `${context}: chunk ${chunkId} at image offset ${offset} is missing from the store`, { offset, chunkIndex: i, chunkId }, { cause: err });
  }
  if (err instanceof WorkerTaskError && err.isSealError) {
    return new EngineError('UserErrorChunkCorrupted', `${context}: chunk ${chunkId} at image offset ${offset} is corrupted (${err.message})`, { offset, chunkIndex: i, chunkId }, { cause: err });
  }
  if (err instanceof EngineError) return err;
  return asEngineError(err, `${context}: chunk at image offset ${offset}`);
}

/** Of two failures of chunks in flight together, report the one earliest in the image. */
function firstByOffset(current: unknown, next: unknown): unknown {
  if (current === undefined) return next;
  const a = current instanceof EngineError ? current.details.chunkIndex : undefined;
  const b = next instanceof EngineError ? next.details.chunkIndex : undefined;
  return a !== undefined && b !== undefined && b < a ? next : current;
}

function sizeMismatch(m: Manifest, i: number, got: number, context: string): EngineError {
  const offset = m.offsetOf(i);
  return new EngineError(
    'UserErrorChunkCorrupted',
    `${context}: chunk ${m.idHex(i)} at image offset ${offset} is corrupted (stored size ${got}, expected ${m.lengthOf(i) + SEAL_OVERHEAD})`,
    { offset, chunkIndex: i, chunkId: m.idHex(i) },
  );
}

export async function restoreImage(options: RestoreOptions): Promise<RestoreStats> {
  const started = performance.now();
  const { store, keys, manifest: m, signal } = options;
  const pool = options.pool ?? sharedCryptoPool();
  // As backup: until a worker has booted, chunks open on the calling thread (reads and writes start at once).
  const bootRunner = pool.ready === false ? new InlineCrypto() : undefined;
  pool.warm?.();
  const runner = (): CryptoRunner => (bootRunner && pool.ready === false ? bootRunner : pool);
  const window = Math.max(1, options.readAhead ?? pool.size * 2 + 2);
  const partial = `${options.target}.partial`;
  const progress = new ProgressTracker(m.diskSize, options.onProgress, options.progressIntervalMs);
  const stats: RestoreStats = { bytesTotal: m.diskSize, bytesWritten: 0, chunks: 0, holes: 0, durationMs: 0 };
  const fh = await fsp.open(partial, fsc.O_RDWR | fsc.O_CREAT | fsc.O_TRUNC, 0o600);
  let ok = false;
  let flushing: Promise<void> | undefined; // the background fdatasync, if one is running
  let direct: FileHandle | undefined; // the same file opened with O_DIRECT, when used
  try {
    await fh.truncate(m.diskSize);
    // With the native GCM, chunks open in place in their shared input slot and are written from
    // there: no output slots, no transfers. node:crypto's fallback needs ordinary output memory
    // (copies into shared memory are slow in V8: crypto-ops.ts).
    const inPlace = nativeGcm !== undefined;
    // O_DIRECT: slots aligned to 4 KiB, each sealed chunk read DIRECT_LEAD bytes in so its plaintext
    // starts on the alignment; whole 4 KiB-multiple chunks then go to a second, O_DIRECT descriptor.
    const wantDirect = inPlace && (options.directIO ?? true) && typeof fsc.O_DIRECT === 'number';
    const stride = Math.ceil((DIRECT_LEAD + m.chunkSize + SEAL_OVERHEAD) / DIRECT_ALIGN) * DIRECT_ALIGN;
    const inPool = wantDirect ? new SlotPool(window, stride, DIRECT_ALIGN) : new SlotPool(window, m.chunkSize + SEAL_OVERHEAD);
    const lead = wantDirect && inPool.aligned ? DIRECT_LEAD : 0;
    if (lead > 0) direct = await openDirect(partial);
    const outPool = new LentSlotPool(inPlace ? 1 : window, m.chunkSize);
    const tasks = new TaskGroup(firstByOffset);
    const fsync = options.fsync ?? true;
    const flushEvery = fsync ? (options.flushEveryBytes ?? 64 * 1024 * 1024) : 0;
    let unflushed = 0;
    const wrote = (len: number): void => {
      unflushed += len;
      if (flushEvery <= 0 || unflushed < flushEvery || flushing) return;
      unflushed = 0;
      flushing = fh.datasync().then(
        () => {
          flushing = undefined;
        },
        (err: unknown) => {
          flushing = undefined;
          tasks.failure ??= asEngineError(err, 'restore: flushing the target');
        },
      );
    };
    for (let i = 0; i < m.chunkCount && tasks.failure === undefined; i++) {
      if (signal?.aborted) {
        tasks.failure = new EngineError('Aborted', 'restore aborted');
        break;
      }
      const len = m.lengthOf(i);
      if (m.isHole(i)) {
        stats.holes++;
        progress.add(len);
        continue;
      }
      const inSlot = await inPool.acquire();
      const outSlot = inPlace ? undefined : await outPool.acquire();
      const task = (async () => {
        let inHeld = true;
        try {
          const got = await fetchInto(store, m.idHex(i), inPool.buffer(inSlot, inPool.slotSize - lead, lead));
          if (got !== len + SEAL_OVERHEAD) throw sizeMismatch(m, i, got, 'restore');
          let buf: Buffer;
          if (outSlot === undefined) {
            await runner().run({ op: 'openInPlace', sealKey: keys.sealKey, id: m.idAt(i), src: inPool.ref(inSlot, got, lead) });
            buf = inPool.buffer(inSlot, got, lead).subarray(SEAL_HEADER_BYTES, SEAL_HEADER_BYTES + len);
          } else {
            const r = await runner().run({ op: 'open', sealKey: keys.sealKey, id: m.idAt(i), src: inPool.ref(inSlot, got), dst: outPool.ref(outSlot, len) });
            outPool.adopt(outSlot, r.out);
            inPool.release(inSlot);
            inHeld = false;
            buf = outPool.buffer(outSlot, len);
          }
          let w = 0;
          if (direct && len % DIRECT_ALIGN === 0 && m.offsetOf(i) % DIRECT_ALIGN === 0) {
            try {
              while (w < len) w += (await direct.write(buf, w, len - w, m.offsetOf(i) + w)).bytesWritten;
              stats.directWrites = (stats.directWrites ?? 0) + 1;
            } catch (err) {
              if ((err as { code?: unknown }).code !== 'EINVAL') throw err;
              direct = undefined; // the device's rules differ: buffered from here on (rewrites this chunk whole)
              w = 0;
            }
          }
          while (w < len) w += (await fh.write(buf, w, len - w, m.offsetOf(i) + w)).bytesWritten;
          wrote(len);
          stats.bytesWritten += len;
          stats.chunks++;
          progress.add(len);
        } catch (err) {
          throw chunkError(err, m, i, 'restore');
        } finally {
          if (inHeld) inPool.release(inSlot);
          if (outSlot !== undefined) outPool.release(outSlot);
        }
      })();
      tasks.add(task);
    }
    await tasks.settle();
    // Every request naming a slot has finished: the slot memory serves the next job (pool.ts).
    inPool.dispose();
    outPool.dispose();
    await flushing;
    if (tasks.failure !== undefined) throw tasks.failure;
    if (fsync) await fh.sync();
    ok = true;
  } finally {
    await flushing; // never close the descriptor under a running fdatasync
    await direct?.close();
    await fh.close();
    if (!ok) await fsp.rm(partial, { force: true }).catch(() => undefined);
  }
  await fsp.rename(partial, options.target);
  if (options.fsync ?? true) await fsyncDir(path.dirname(path.resolve(options.target)));
  stats.durationMs = performance.now() - started;
  progress.finish();
  return stats;
}

/**
 * Random access to a backed-up image without restoring it (e.g. to serve a restored disk).
 * Decrypts on the calling thread; keeps the last chunk it opened.
 */
export class ImageReader {
  private cached: { index: number; data: Buffer } | undefined;
  constructor(
    private readonly store: ChunkStore,
    private readonly keys: StoreKeys,
    readonly manifest: Manifest,
  ) {}

  get size(): number {
    return this.manifest.diskSize;
  }

  private async chunk(i: number): Promise<Buffer> {
    const m = this.manifest;
    if (this.cached?.index === i) return this.cached.data;
    let data: Buffer;
    if (m.isHole(i)) {
      data = Buffer.alloc(m.lengthOf(i));
    } else {
      try {
        const sealed = await this.store.get(m.idHex(i));
        if (sealed.length !== m.lengthOf(i) + SEAL_OVERHEAD) throw sizeMismatch(m, i, sealed.length, 'read');
        try {
          data = openSealed(this.keys.sealKey, m.idAt(i), sealed);
        } catch (err) {
          throw new WorkerTaskError('SealError', (err as Error).message);
        }
      } catch (err) {
        throw chunkError(err, m, i, 'read');
      }
    }
    this.cached = { index: i, data };
    return data;
  }

  /** Read `length` bytes at `offset` (clipped to the image end). */
  async read(offset: number, length: number): Promise<Buffer> {
    const m = this.manifest;
    const end = Math.min(m.diskSize, offset + length);
    if (offset >= end) return Buffer.alloc(0);
    const out = Buffer.allocUnsafe(end - offset);
    let pos = offset;
    while (pos < end) {
      const i = Math.floor(pos / m.chunkSize);
      const data = await this.chunk(i);
      const inChunk = pos - m.offsetOf(i);
      const n = Math.min(end - pos, data.length - inChunk);
      data.copy(out, pos - offset, inChunk, inChunk + n);
      pos += n;
    }
    return out;
  }
}

/** Stream the whole image, in order, to a writable (e.g. an HTTP response). Honors backpressure. */
export async function restoreToStream(
  options: Omit<RestoreOptions, 'target' | 'fsync'> & { output: NodeJS.WritableStream },
): Promise<void> {
  const reader = new ImageReader(options.store, options.keys, options.manifest);
  const m = options.manifest;
  const progress = new ProgressTracker(m.diskSize, options.onProgress, options.progressIntervalMs);
  const ahead = Math.max(1, options.readAhead ?? 4);
  const pending: Array<Promise<Buffer>> = [];
  let next = 0;
  const fill = (): void => {
    while (pending.length < ahead && next < m.chunkCount) {
      const i = next++;
      const p = reader.read(m.offsetOf(i), m.lengthOf(i));
      p.catch(() => undefined); // observed when awaited; avoid an unhandled rejection meanwhile
      pending.push(p);
    }
  };
  fill();
  while (pending.length > 0) {
    if (options.signal?.aborted) throw new EngineError('Aborted', 'restore aborted');
    const buf = await (pending.shift() as Promise<Buffer>);
    fill();
    if (!options.output.write(buf)) {
      await new Promise<void>((resolve) => options.output.once('drain', () => resolve()));
    }
    progress.add(buf.length);
  }
  progress.finish();
}
