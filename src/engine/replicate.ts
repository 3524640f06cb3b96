/**
 * Geo-redundancy: a chunk store that writes every chunk, fossil move and metadata object to two
 * stores and reads from the primary, falling back to the secondary when the primary fails or
 * no longer has the object (its container or directory is gone).
 *
 * - Writes (`putIfAbsent`, `putMeta`, `delete*`, `fossilize`, `sync`) go to both and succeed only
 *   when both do, so a committed manifest's chunks are in both stores.
 * - `touch`/`has` (a backup's dedup check) are true only when both have the chunk: a chunk
 *   missing on one side is written again to both.
 * - Reads (`get`, `readInto`, `stat`, `getMeta`, listings) try the primary first; any error or
 *   NotFound there tries the secondary. NotFound on both is NotFound.
 */
import { ChunkStoreError } from './errors.js';
import type { ChunkStat, ChunkStore, DeleteResult, PutOptions } from './store.js';

async function fallback<T>(primary: () => Promise<T>, secondary: () => Promise<T>): Promise<T> {
  try {
    return await primary();
  } catch (err) {
    if (!(err instanceof ChunkStoreError)) throw err;
    try {
      return await secondary();
    } catch (err2) {
      // Both failed: report the primary's error unless it was a plain miss and the secondary's is worse.
      if (err.kind === 'NotFound' && err2 instanceof ChunkStoreError && err2.kind !== 'NotFound') throw err2;
      throw err;
    }
  }
}

function listingWithFallback(primary: () => AsyncIterable<string>, secondary: () => AsyncIterable<string>): AsyncIterable<string> {
  return {
    async *[Symbol.asyncIterator]() {
      let yielded = false;
      try {
        for await (const x of primary()) {
          yielded = true;
          yield x;
        }
        return;
      } catch (err) {
        if (yielded || !(err instanceof ChunkStoreError)) throw err;
      }
      yield* secondary();
    },
  };
}

export function replicatedStore(primary: ChunkStore, secondary: ChunkStore): ChunkStore {
  const both = async <T>(op: (s: ChunkStore) => Promise<T>): Promise<[T, T]> => {
    const [a, b] = await Promise.allSettled([op(primary), op(secondary)]);
    if (a.status === 'rejected') throw a.reason;
    if (b.status === 'rejected') throw b.reason;
    return [a.value, b.value];
  };
  const store: ChunkStore = {
    description: `grs(${primary.description} → ${secondary.description})`,
    putIfAbsent: async (id: string, data: Uint8Array, o?: PutOptions) => {
      // The caller may reuse `data` once *both* backends took it.
      let taken = 0;
      const opts: PutOptions = o?.onDataTaken ? { onDataTaken: () => { if (++taken === 2) o.onDataTaken?.(); } } : {};
      const [a, b] = await both((s) => s.putIfAbsent(id, data, opts));
      return a || b;
    },
    get: (id) => fallback(() => primary.get(id), () => secondary.get(id)),
    has: async (id) => (await both((s) => s.has(id))).every(Boolean),
    touch: async (id) => (await both((s) => s.touch(id))).every(Boolean),
    stat: (id): Promise<ChunkStat> => fallback(() => primary.stat(id), () => secondary.stat(id)),
    list: () => listingWithFallback(() => primary.list(), () => secondary.list()),
    delete: async (id): Promise<DeleteResult> => ((await both((s) => s.delete(id))).includes('deleted') ? 'deleted' : 'absent'),
    sync: async () => {
      await both((s) => s.sync());
    },
    fossilize: async (id) => (await both((s) => s.fossilize(id))).some(Boolean),
    resurrect: async (id) => (await both((s) => s.resurrect(id))).some(Boolean),
    listFossils: () => listingWithFallback(() => primary.listFossils(), () => secondary.listFossils()),
    deleteFossil: async (id) => (await both((s) => s.deleteFossil(id))).some(Boolean),
    putMeta: async (name, data) => {
      await both((s) => s.putMeta(name, data));
    },
    getMeta: (name) => fallback(() => primary.getMeta(name), () => secondary.getMeta(name)),
    listMeta: (prefix) => listingWithFallback(() => primary.listMeta(prefix), () => secondary.listMeta(prefix)),
    deleteMeta: async (name) => (await both((s) => s.deleteMeta(name))).some(Boolean),
    readInto: (id, target) =>
      fallback(
        () => (primary.readInto ? primary.readInto(id, target) : primary.get(id).then((d) => (d.length <= target.length && target.set(d), d.length))),
        () => (secondary.readInto ? secondary.readInto(id, target) : secondary.get(id).then((d) => (d.length <= target.length && target.set(d), d.length))),
      ),
    removeStaleTemporaries: async (t) => {
      const [a, b] = await both(async (s) => (s.removeStaleTemporaries ? s.removeStaleTemporaries(t) : 0));
      return a + b;
    },
  };
  return store;
}
