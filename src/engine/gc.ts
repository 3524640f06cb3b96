/**
 * Garbage collection: mark and sweep without an in-memory index.
 *
 * - Mark: every chunk referenced by a live manifest is touched (its mtime becomes now).
 * - Sweep: every object whose mtime is older than the cutoff is deleted with a conditional
 *   delete (`unmodifiedSince: cutoff`), which loses against any concurrent touch or re-put.
 * - Then leftovers of interrupted writes older than the cutoff are removed.
 *
 * Safety rule (see README.md): `cutoff` must not be later than the start of any backup still
 * running when GC starts. Such a backup touches every chunk it reuses and writes new ones after
 * its own start, so all its chunks are newer than the cutoff. Manifests committed after the
 * mark phase belong to backups that started after GC (newer chunks) or before it (cutoff rule).
 * A crash at any step leaves a valid store: mark only touches, and the fs store's delete goes
 * through a rename that readers undo.
 */
import { EngineError, isNotFound } from './errors.js';
import type { Manifest } from './manifest.js';
import { Semaphore } from './store-wrappers.js';
import { MTIME_SLACK_MS, type ChunkStore } from './store.js';
import { TaskGroup } from './tasks.js';

export interface GcOptions {
  store: ChunkStore;
  /** Every manifest that must stay restorable (read lazily, one at a time). */
  liveManifests: Iterable<Manifest> | AsyncIterable<Manifest>;
  /**
   * Objects not modified since this instant may be swept. Must be ≤ the start of every backup
   * in flight when GC starts (recovery passes min(now, oldest running backup's start)).
   */
  cutoff: Date;
  /** Subtracted from the cutoff, for coarse filesystem clocks (default 60 s). */
  safetyMarginMs?: number;
  /** Report what would be swept without deleting. */
  dryRun?: boolean;
  concurrency?: number;
  signal?: AbortSignal;
}

export interface GcStats {
  manifests: number;
  /** References touched in the mark phase. */
  marked: number;
  /** References of live manifests that were not in the store (a damaged store: run verify). */
  missing: number;
  objectsSeen: number;
  swept: number;
  kept: number;
  bytesSwept: number;
  temporariesRemoved: number;
  effectiveCutoff: Date;
  durationMs: number;
}

export async function collectGarbage(options: GcOptions): Promise<GcStats> {
  const started = performance.now();
  const gcStart = Date.now();
  const { store } = options;
  const cutoffMs = Math.min(options.cutoff.getTime(), gcStart) - (options.safetyMarginMs ?? 60_000);
  const cutoff = new Date(cutoffMs);
  const sem = new Semaphore(Math.max(1, options.concurrency ?? 16));
  const stats: GcStats = { manifests: 0, marked: 0, missing: 0, objectsSeen: 0, swept: 0, kept: 0, bytesSwept: 0, temporariesRemoved: 0, effectiveCutoff: cutoff, durationMs: 0 };
  const tasks = new TaskGroup();
  const spawn = async (op: () => Promise<void>): Promise<void> => {
    if (options.signal?.aborted) throw new EngineError('Aborted', 'gc aborted');
    if (tasks.failure !== undefined) throw tasks.failure;
    await sem.acquire();
    tasks.add(op().finally(() => sem.release()));
  };
  const drain = async (): Promise<void> => {
    await tasks.settle();
    if (tasks.failure !== undefined) throw tasks.failure;
  };

  // Mark.
  for await (const m of options.liveManifests) {
    stats.manifests++;
    for (const id of m.distinctIds()) {
      await spawn(async () => {
        if (await store.touch(id)) stats.marked++;
        else stats.missing++;
      });
    }
  }
  await drain();

  // Sweep.
  for await (const id of store.list()) {
    stats.objectsSeen++;
    await spawn(async () => {
      let st;
      try {
        st = await store.stat(id);
      } catch (err) {
        if (isNotFound(err)) return;
        throw err;
      }
      if (st.mtimeMs >= cutoffMs - MTIME_SLACK_MS) {
        stats.kept++;
        return;
      }
      if (options.dryRun) {
        stats.swept++;
        stats.bytesSwept += st.size;
        return;
      }
      const r = await store.delete(id, { unmodifiedSince: cutoff });
      if (r === 'deleted') {
        stats.swept++;
        stats.bytesSwept += st.size;
      } else if (r === 'kept') {
        stats.kept++;
      }
    });
  }
  await drain();
  if (!options.dryRun) {
    await store.sync();
    if (store.removeStaleTemporaries) stats.temporariesRemoved = await store.removeStaleTemporaries(cutoff);
  }
  stats.durationMs = performance.now() - started;
  return stats;
}
