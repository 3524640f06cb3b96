/**
 * Wrappers that are themselves chunk stores (restic's backend decorators). Stack them where a
 * store is opened, e.g. `withRetry(withConcurrencyLimit(await FsChunkStore.open(dir), 16))`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ChunkStoreError } from './errors.js';
import type { ChunkStat, ChunkStore, DeleteResult, PutOptions } from './store.js';

export interface RetryOptions {
  /** Attempts after the first (default 5). */
  retries?: number;
  /** First back-off in ms, doubled each attempt with ±50% jitter (default 50). */
  baseDelayMs?: number;
  /** Ceiling of one back-off (default 5000). */
  maxDelayMs?: number;
}

/**
 * Retries calls that fail with a `Transient` ChunkStoreError, with exponential back-off and
 * jitter. `NotFound` and `Permanent` errors pass through at once. All store operations are
 * idempotent under the contract, so retrying any of them is safe. `list()` is retried only
 * until it yields its first id (a half-consumed listing cannot be resumed generically).
 */
export function withRetry(inner: ChunkStore, options: RetryOptions = {}): ChunkStore {
  const retries = options.retries ?? 5;
  const base = options.baseDelayMs ?? 50;
  const max = options.maxDelayMs ?? 5000;
  async function run<T>(op: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await op();
      } catch (err) {
        if (!(err instanceof ChunkStoreError) || err.kind !== 'Transient' || attempt >= retries) throw err;
        const delay = Math.min(max, base * 2 ** attempt) * (0.5 + Math.random());
        await sleep(delay);
      }
    }
  }
  function retriedListing(open: () => AsyncIterable<string>): AsyncIterable<string> {
    return {
      async *[Symbol.asyncIterator]() {
        for (let attempt = 0; ; attempt++) {
          let yielded = false;
          try {
            for await (const id of open()) {
              yielded = true;
              yield id;
            }
            return;
          } catch (err) {
            if (yielded || !(err instanceof ChunkStoreError) || err.kind !== 'Transient' || attempt >= retries) throw err;
            await sleep(Math.min(max, base * 2 ** attempt));
          }
        }
      },
    };
  }
  const store: ChunkStore = {
    description: `retry(${inner.description})`,
    putIfAbsent: async (id, data, o) => {
      // Once the backend has taken `data`, the caller may reuse the buffer: a retry would write
      // whatever is there now. Such a failure passes through (the caller's sync/commit fails).
      let taken = false;
      const opts: PutOptions = {
        onDataTaken: () => {
          taken = true;
          o?.onDataTaken?.();
        },
      };
      for (let attempt = 0; ; attempt++) {
        try {
          return await inner.putIfAbsent(id, data, opts);
        } catch (err) {
          if (taken || !(err instanceof ChunkStoreError) || err.kind !== 'Transient' || attempt >= retries) throw err;
          await sleep(Math.min(max, base * 2 ** attempt) * (0.5 + Math.random()));
        }
      }
    },
    get: (id) => run(() => inner.get(id)),
    has: (id) => run(() => inner.has(id)),
    touch: (id) => run(() => inner.touch(id)),
    stat: (id) => run(() => inner.stat(id)),
    delete: (id) => run(() => inner.delete(id)),
    sync: () => run(() => inner.sync()),
    list: () => retriedListing(() => inner.list()),
    fossilize: (id) => run(() => inner.fossilize(id)),
    resurrect: (id) => run(() => inner.resurrect(id)),
    listFossils: () => retriedListing(() => inner.listFossils()),
    deleteFossil: (id) => run(() => inner.deleteFossil(id)),
    putMeta: (name, data) => run(() => inner.putMeta(name, data)),
    getMeta: (name) => run(() => inner.getMeta(name)),
    listMeta: (prefix) => retriedListing(() => inner.listMeta(prefix)),
    deleteMeta: (name) => run(() => inner.deleteMeta(name)),
  };
  if (inner.removeStaleTemporaries) {
    const f = inner.removeStaleTemporaries.bind(inner);
    store.removeStaleTemporaries = (t) => run(() => f(t));
  }
  if (inner.readInto) {
    const f = inner.readInto.bind(inner);
    store.readInto = (id, target) => run(() => f(id, target));
  }
  return store;
}

/** A counting semaphore (FIFO). */
export class Semaphore {
  private available: number;
  private readonly waiters: Array<() => void> = [];
  constructor(readonly size: number) {
    if (!(size >= 1)) throw new RangeError('semaphore size must be >= 1');
    this.available = size;
  }
  async acquire(): Promise<void> {
    if (this.available > 0) {
      this.available--;
      return;
    }
    await new Promise<void>((resolve) => this.waiters.push(resolve));
  }
  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.available++;
  }
  async run<T>(op: () => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await op();
    } finally {
      this.release();
    }
  }
}

/**
 * At most `limit` calls in flight on `inner` (FIFO). `list()` is not limited (one listing is
 * one long call). Use it to bound open files or HTTP requests to an object store.
 */
export function withConcurrencyLimit(inner: ChunkStore, limit: number): ChunkStore {
  const sem = new Semaphore(limit);
  const store: ChunkStore = {
    description: `limit${limit}(${inner.description})`,
    putIfAbsent: (id: string, data: Uint8Array, o?: PutOptions) => sem.run(() => inner.putIfAbsent(id, data, o)),
    get: (id: string): Promise<Buffer> => sem.run(() => inner.get(id)),
    has: (id: string): Promise<boolean> => sem.run(() => inner.has(id)),
    touch: (id: string): Promise<boolean> => sem.run(() => inner.touch(id)),
    stat: (id: string): Promise<ChunkStat> => sem.run(() => inner.stat(id)),
    delete: (id: string): Promise<DeleteResult> => sem.run(() => inner.delete(id)),
    sync: () => sem.run(() => inner.sync()),
    list: () => inner.list(),
    fossilize: (id) => sem.run(() => inner.fossilize(id)),
    resurrect: (id) => sem.run(() => inner.resurrect(id)),
    listFossils: () => inner.listFossils(),
    deleteFossil: (id) => sem.run(() => inner.deleteFossil(id)),
    putMeta: (name, data) => sem.run(() => inner.putMeta(name, data)),
    getMeta: (name) => sem.run(() => inner.getMeta(name)),
    listMeta: (prefix) => inner.listMeta(prefix),
    deleteMeta: (name) => sem.run(() => inner.deleteMeta(name)),
  };
  if (inner.removeStaleTemporaries) {
    const f = inner.removeStaleTemporaries.bind(inner);
    store.removeStaleTemporaries = (t) => sem.run(() => f(t));
  }
  if (inner.readInto) {
    const f = inner.readInto.bind(inner);
    store.readInto = (id, target) => sem.run(() => f(id, target));
  }
  return store;
}
