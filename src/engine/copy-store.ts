/**
 * Copy a whole chunk store to another (moving an installation from the file system to an object
 * store, or seeding a secondary): every chunk, every fossil (as a fossil) and every metadata
 * object, each read back from the target and compared. Idempotent: run it again after an
 * interruption; objects already in the target are verified, not rewritten.
 * Run it while nothing writes to the source (the server stopped).
 */
import { ChunkStoreError } from './errors.js';
import { Semaphore } from './store-wrappers.js';
import type { ChunkStore } from './store.js';
import { TaskGroup } from './tasks.js';

export interface CopyStoreOptions {
  /** Parallel object copies (default 8). */
  concurrency?: number;
  /** Read every object back from the target and compare it (default true). */
  verify?: boolean;
  onProgress?: (s: CopyStoreStats) => void;
  signal?: AbortSignal;
}

export interface CopyStoreStats {
  chunks: number;
  fossils: number;
  meta: number;
  /** Objects the target had already (verified, not rewritten). */
  alreadyPresent: number;
  bytes: number;
}

export async function copyStore(source: ChunkStore, target: ChunkStore, options: CopyStoreOptions = {}): Promise<CopyStoreStats> {
  const verify = options.verify ?? true;
  const sem = new Semaphore(Math.max(1, options.concurrency ?? 8));
  const tasks = new TaskGroup();
  const stats: CopyStoreStats = { chunks: 0, fossils: 0, meta: 0, alreadyPresent: 0, bytes: 0 };
  const spawn = async (op: () => Promise<void>): Promise<void> => {
    options.signal?.throwIfAborted();
    if (tasks.failure !== undefined) throw tasks.failure;
    await sem.acquire();
    tasks.add(op().finally(() => sem.release()));
  };
  const drain = async (): Promise<void> => {
    await tasks.settle();
    if (tasks.failure !== undefined) throw tasks.failure;
  };
  const check = (what: string, a: Buffer, b: Buffer): void => {
    if (!a.equals(b)) throw new ChunkStoreError('Permanent', `copy-store: ${what} differs in the target after copying (${target.description})`);
  };

  const liveIds = new Set<string>();
  for await (const id of source.list()) {
    liveIds.add(id);
    await spawn(async () => {
      const data = await source.get(id);
      if (!(await target.putIfAbsent(id, data))) stats.alreadyPresent++;
      if (verify) check(`chunk ${id}`, data, await target.get(id));
      stats.chunks++;
      stats.bytes += data.length;
      options.onProgress?.(stats);
    });
  }
  await drain();
  await target.sync();

  // Fossils stay fossils (the fossil index, copied below as metadata, keeps their generations).
  for await (const id of source.listFossils()) {
    if (liveIds.has(id)) continue;
    await spawn(async () => {
      let data: Buffer;
      try {
        // A read resurrects a fossil in the source; move it back there too.
        data = await source.get(id);
        await source.fossilize(id);
      } catch (err) {
        if (err instanceof ChunkStoreError && err.kind === 'NotFound') return;
        throw err;
      }
      if (!(await target.putIfAbsent(id, data))) stats.alreadyPresent++;
      if (verify) check(`fossil ${id}`, data, await target.get(id));
      await target.fossilize(id);
      stats.fossils++;
      stats.bytes += data.length;
    });
  }
  await drain();

  for await (const name of source.listMeta('')) {
    await spawn(async () => {
      const data = await source.getMeta(name);
      await target.putMeta(name, data);
      if (verify) check(`metadata ${name}`, data, await target.getMeta(name));
      stats.meta++;
      stats.bytes += data.length;
      options.onProgress?.(stats);
    });
  }
  await drain();
  await target.sync();
  return stats;
}
