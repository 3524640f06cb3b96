/**
 * Garbage collection: mark and two-step sweep with fossil generations (duplicacy's "fossil
 * collection"), the same on every store. Nothing depends on modification times: object stores
 * have no atomic "delete if not touched since", and clocks of the store are never compared.
 *
 * One run:
 * 1. Mark: the ids of every live manifest, in memory (a Set of ids: ≈ 100 B per distinct chunk).
 * 2. Old fossils: every fossil a live manifest references is resurrected (and its fossil copy
 *    removed). Every other fossil is deleted iff its generation was *sealed* strictly before the
 *    effective cutoff (a backup that started in the seal's own millisecond may have looked its chunks up before
 *    they moved); fossils of no recorded generation (a GC crashed) join this generation.
 * 3. Fossilize: every live chunk no live manifest references moves to the fossil namespace.
 * 4. Seal: the fossil index (meta `gc/fossils`: id → sealedAt) is written with sealedAt = the end
 *    of step 3 for every fossil of this run.
 *
 * Why it is safe next to backups (the caller's rule: `cutoff` ≤ the start of every backup
 * running when GC starts, and one GC per store at a time):
 * - A backup B that found a chunk X (touch/has/putIfAbsent = false) before GC fossilized it may
 *   commit a manifest referencing X. X is then a fossil, not gone: reads resurrect it, and it
 *   can only be deleted by a later GC whose cutoff is ≥ X's sealedAt (+ margin), i.e. once every
 *   backup that was running when X was fossilized has ended. B ended, so B's manifest is
 *   committed (and live: the caller lists live manifests after computing the cutoff, so X is
 *   resurrected) or B failed (X was garbage).
 * - A backup that started after X's generation was sealed saw X absent (or resurrected it by
 *   reading): it wrote or revived the live X, which no fossil delete touches.
 * - Crash at any step: fossils are only ever deleted by a GC that recorded their generation;
 *   a half-done move leaves the chunk live, fossil, or both; readers resurrect.
 * The effective cutoff is min(cutoff, GC start) − safetyMarginMs, all read from the clocks of the
 * hosts running backups and GC (not the store's), so the margin covers their skew.
 */
import { EngineError, isNotFound } from './errors.js';
import type { Manifest } from './manifest.js';
import { Semaphore } from './store-wrappers.js';
import type { ChunkStore } from './store.js';
import { TaskGroup } from './tasks.js';

/** Metadata object holding the fossil index. */
export const FOSSIL_INDEX = 'gc/fossils';
const INDEX_MAGIC = Buffer.from('RSVGCF1\0', 'latin1');

export interface GcOptions {
  store: ChunkStore;
  /** Every manifest that must stay restorable (read lazily, one at a time). */
  liveManifests: Iterable<Manifest> | AsyncIterable<Manifest>;
  /**
   * Must be ≤ the start of every backup in flight when GC starts (recovery passes
   * min(now, oldest running backup's start)). Fossils sealed before it (minus the margin) go.
   */
  cutoff: Date;
  /** Subtracted from the cutoff, for clock skew between hosts (default 60 s). */
  safetyMarginMs?: number;
  /** Report what would happen without changing the store. */
  dryRun?: boolean;
  concurrency?: number;
  signal?: AbortSignal;
}

export interface GcStats {
  manifests: number;
  /** Distinct live references found in the store (live or resurrected from a fossil). */
  marked: number;
  /** Live references that were in the store neither live nor as a fossil (a damaged store: run verify). */
  missing: number;
  /** Live chunks listed. */
  objectsSeen: number;
  /** Unreferenced chunks moved to the fossil namespace by this run. */
  fossilized: number;
  /** Fossils of live manifests moved back. */
  resurrected: number;
  /** Fossils deleted for good (their generation was sealed before the cutoff). */
  swept: number;
  /** Fossils left for a later GC (their generation is younger than the cutoff). */
  fossilsKept: number;
  temporariesRemoved: number;
  effectiveCutoff: Date;
  durationMs: number;
}

export function encodeFossilIndex(index: Map<string, number>): Buffer {
  const out = Buffer.alloc(INDEX_MAGIC.length + index.size * 40);
  INDEX_MAGIC.copy(out, 0);
  let off = INDEX_MAGIC.length;
  for (const [id, sealedAt] of index) {
    out.write(id, off, 32, 'hex');
    out.writeDoubleBE(sealedAt, off + 32);
    off += 40;
  }
  return out;
}

/** The fossil index, or undefined when `data` is not one. */
export function decodeFossilIndex(data: Buffer): Map<string, number> | undefined {
  if (data.length < INDEX_MAGIC.length || !data.subarray(0, INDEX_MAGIC.length).equals(INDEX_MAGIC) || (data.length - INDEX_MAGIC.length) % 40 !== 0) return undefined;
  const index = new Map<string, number>();
  for (let off = INDEX_MAGIC.length; off < data.length; off += 40) index.set(data.toString('hex', off, off + 32), data.readDoubleBE(off + 32));
  return index;
}

/** A damaged or missing index is an empty one: every fossil then waits one more generation (the safe side). */
async function loadIndex(store: ChunkStore): Promise<Map<string, number>> {
  try {
    return decodeFossilIndex(await store.getMeta(FOSSIL_INDEX)) ?? new Map();
  } catch (err) {
    if (isNotFound(err)) return new Map();
    throw err;
  }
}

export async function collectGarbage(options: GcOptions): Promise<GcStats> {
  const started = performance.now();
  const gcStart = Date.now();
  const { store } = options;
  const dry = options.dryRun === true;
  const cutoffMs = Math.min(options.cutoff.getTime(), gcStart) - (options.safetyMarginMs ?? 60_000);
  const sem = new Semaphore(Math.max(1, options.concurrency ?? 16));
  const stats: GcStats = {
    manifests: 0, marked: 0, missing: 0, objectsSeen: 0, fossilized: 0, resurrected: 0, swept: 0, fossilsKept: 0, temporariesRemoved: 0,
    effectiveCutoff: new Date(cutoffMs), durationMs: 0,
  };
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

  // 1. Mark (in memory; `found` flips when the store has the chunk).
  const live = new Map<string, boolean>();
  for await (const m of options.liveManifests) {
    stats.manifests++;
    for (const id of m.distinctIds()) live.set(id, false);
  }
  const found = (id: string): void => {
    if (live.get(id) === false) {
      live.set(id, true);
      stats.marked++;
    }
  };

  // 2. Old fossils.
  const index = await loadIndex(store);
  const next = new Map<string, number>(); // fossils that stay, with their sealedAt
  const joining: string[] = []; // fossils of this generation (sealed at the end)
  for await (const f of store.listFossils()) {
    if (live.has(f)) {
      await spawn(async () => {
        if (dry || (await store.resurrect(f))) {
          stats.resurrected++;
          found(f);
          if (!dry) await store.deleteFossil(f); // the live copy exists now
        }
      });
      continue;
    }
    const sealedAt = index.get(f);
    if (sealedAt === undefined) {
      joining.push(f); // left by a GC that crashed before sealing
      stats.fossilsKept++;
    } else if (sealedAt < cutoffMs) {
      await spawn(async () => {
        if (dry || (await store.deleteFossil(f))) stats.swept++;
      });
    } else {
      next.set(f, sealedAt);
      stats.fossilsKept++;
    }
  }
  await drain();

  // 3. Fossilize unreferenced live chunks.
  for await (const id of store.list()) {
    stats.objectsSeen++;
    if (live.has(id)) {
      found(id);
      continue;
    }
    await spawn(async () => {
      if (dry || (await store.fossilize(id))) {
        stats.fossilized++;
        joining.push(id);
      }
    });
  }
  await drain();
  for (const v of live.values()) if (!v) stats.missing++;

  // 4. Seal this generation.
  if (!dry) {
    const sealedAt = Date.now();
    for (const id of joining) next.set(id, sealedAt);
    await store.sync();
    if (next.size > 0 || index.size > 0) await store.putMeta(FOSSIL_INDEX, encodeFossilIndex(next));
    if (store.removeStaleTemporaries) stats.temporariesRemoved = await store.removeStaleTemporaries(new Date(cutoffMs));
  }
  stats.durationMs = performance.now() - started;
  return stats;
}
