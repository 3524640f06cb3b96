import { existsSync, promises as fsp } from 'node:fs';
import { createHash, randomFillSync } from 'node:crypto';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ChunkStoreError } from './errors.js';
import { FsChunkStore } from './fs-store.js';
import { addressMod } from './native.js';
import { LentSlotPool } from './pool.js';
import { runChunkStoreConformance } from './store-conformance.js';
import { withConcurrencyLimit, withRetry } from './store-wrappers.js';
import type { ChunkStore } from './store.js';
import { tempDir } from './testdata/helpers.js';

runChunkStoreConformance('fs', async () => {
  const t = await tempDir();
  return { store: await FsChunkStore.open(t.dir), dispose: t.dispose };
}, { describe, it });

runChunkStoreConformance('fs + retry + limit(4)', async () => {
  const t = await tempDir();
  return { store: withRetry(withConcurrencyLimit(await FsChunkStore.open(t.dir), 4), { baseDelayMs: 1 }), dispose: t.dispose };
}, { describe, it });

const ID = 'ab'.repeat(32);

function fakeStore(overrides: Partial<ChunkStore>): ChunkStore {
  const fail = (): never => {
    throw new Error('not implemented');
  };
  return {
    description: 'fake',
    putIfAbsent: fail,
    get: fail,
    has: fail,
    touch: fail,
    stat: fail,
    delete: fail,
    sync: async () => undefined,
    list: () => ({ async *[Symbol.asyncIterator]() {} }),
    fossilize: fail,
    resurrect: fail,
    listFossils: () => ({ async *[Symbol.asyncIterator]() {} }),
    deleteFossil: fail,
    putMeta: fail,
    getMeta: fail,
    listMeta: () => ({ async *[Symbol.asyncIterator]() {} }),
    deleteMeta: fail,
    ...overrides,
  };
}

describe('store wrappers', () => {
  it('retry retries Transient errors and passes NotFound/Permanent through at once', async () => {
    let calls = 0;
    const flaky = fakeStore({
      get: async () => {
        calls++;
        if (calls < 3) throw new ChunkStoreError('Transient', 'busy');
        return Buffer.from('ok');
      },
      has: async () => {
        calls++;
        throw new ChunkStoreError('Permanent', 'denied');
      },
      stat: async () => {
        calls++;
        throw new ChunkStoreError('NotFound', 'nope');
      },
    });
    const s = withRetry(flaky, { baseDelayMs: 1 });
    expect((await s.get(ID)).toString()).toBe('ok');
    expect(calls).toBe(3);
    calls = 0;
    await expect(s.has(ID)).rejects.toMatchObject({ kind: 'Permanent' });
    expect(calls).toBe(1);
    calls = 0;
    await expect(s.stat(ID)).rejects.toMatchObject({ kind: 'NotFound' });
    expect(calls).toBe(1);
  });

  it('retry gives up after the configured attempts', async () => {
    let calls = 0;
    const s = withRetry(fakeStore({ touch: async () => { calls++; throw new ChunkStoreError('Transient', 'x'); } }), { retries: 2, baseDelayMs: 1 });
    await expect(s.touch(ID)).rejects.toMatchObject({ kind: 'Transient' });
    expect(calls).toBe(3);
  });

  it('concurrency limit bounds calls in flight', async () => {
    let now = 0;
    let peak = 0;
    const slow = fakeStore({
      has: async () => {
        now++;
        peak = Math.max(peak, now);
        await new Promise((r) => setTimeout(r, 5));
        now--;
        return true;
      },
    });
    const s = withConcurrencyLimit(slow, 3);
    await Promise.all(Array.from({ length: 20 }, () => s.has(ID)));
    expect(peak).toBe(3);
  });
});

describe('fs store specifics', () => {
  it('never lists temp files; removeStaleTemporaries cleans old ones only', async () => {
    const t = await tempDir();
    try {
      const s = await FsChunkStore.open(t.dir);
      await s.putIfAbsent(ID, Buffer.from('x'));
      const dir = path.join(t.dir, 'chunks', ID.slice(0, 4));
      const oldTmp = path.join(dir, `.tmp-${ID}-dead`);
      const newTmp = path.join(dir, `.tmp-${ID}-live`);
      await fsp.writeFile(oldTmp, 'partial');
      await fsp.writeFile(newTmp, 'partial');
      const past = new Date(Date.now() - 3_600_000);
      await fsp.utimes(oldTmp, past, past);
      const ids: string[] = [];
      for await (const id of s.list()) ids.push(id);
      expect(ids).toEqual([ID]);
      expect(await s.removeStaleTemporaries(new Date(Date.now() - 60_000))).toBe(1);
      expect((await fsp.readdir(dir)).sort()).toEqual([`.tmp-${ID}-live`, ID].sort());
    } finally {
      await t.dispose();
    }
  });

  it('a fossil (trash/) is moved back by any read', async () => {
    const t = await tempDir();
    try {
      const s = await FsChunkStore.open(t.dir);
      await s.putIfAbsent(ID, Buffer.from('keep me'));
      // GC fossilized it under a backup that still uses it.
      await fsp.rename(path.join(t.dir, 'chunks', ID.slice(0, 4), ID), path.join(t.dir, 'trash', ID));
      expect((await s.get(ID)).toString()).toBe('keep me');
      expect(await fsp.readdir(path.join(t.dir, 'trash'))).toEqual([]);
    } finally {
      await t.dispose();
    }
  });

  it('classifies filesystem errors', async () => {
    const t = await tempDir();
    try {
      const s = await FsChunkStore.open(t.dir);
      await expect(s.get(ID)).rejects.toMatchObject({ kind: 'NotFound' });
      // A directory where a chunk file should be: a Permanent error (EISDIR), not a retry loop.
      await fsp.mkdir(path.join(t.dir, 'chunks', ID.slice(0, 4), ID), { recursive: true });
      await expect(s.get(ID)).rejects.toMatchObject({ kind: 'Permanent' });
    } finally {
      await t.dispose();
    }
  });
});

describe('fs store: flushing behind the caller', () => {
  it('hands the buffer back (onDataTaken) before the put resolves; the name appears only once durable', async () => {
    const t = await tempDir();
    try {
      const store = await FsChunkStore.open(t.dir);
      const id = 'cd'.repeat(32);
      const data = Buffer.from('sealed bytes');
      const order: string[] = [];
      let seen: Promise<Buffer> | undefined;
      const put = store
        .putIfAbsent(id, data, {
          onDataTaken: () => {
            order.push('taken');
            // An operation on the id while it is being flushed waits for it, then sees it.
            seen = store.get(id).then((b) => {
              order.push('get');
              return b;
            });
          },
        })
        .then((r) => {
          order.push('resolved');
          return r;
        });
      expect(await put).toBe(true);
      expect((await seen)?.equals(data)).toBe(true);
      expect(order).toEqual(['taken', 'resolved', 'get']);
      expect(await store.putIfAbsent(id, data, { onDataTaken: () => order.push('again') })).toBe(false);
      expect(order).not.toContain('again');
      await store.sync();
      const names = await fsp.readdir(path.join(t.dir, 'chunks', id.slice(0, 4)));
      expect(names).toEqual([id]);
    } finally {
      await t.dispose();
    }
  });

  it('at most maxPendingObjects puts are written but not yet flushed at once', async () => {
    const t = await tempDir();
    try {
      const store = await FsChunkStore.open(t.dir, { maxPendingObjects: 2 });
      let taken = 0;
      let maxOutstanding = 0;
      let resolved = 0;
      const ids = Array.from({ length: 12 }, (_, i) => i.toString(16).padStart(2, '0').repeat(32));
      await Promise.all(
        ids.map((id) =>
          store
            .putIfAbsent(id, Buffer.alloc(4096, 1), {
              onDataTaken: () => {
                taken++;
                maxOutstanding = Math.max(maxOutstanding, taken - resolved);
              },
            })
            .then(() => resolved++),
        ),
      );
      expect(resolved).toBe(12);
      expect(maxOutstanding).toBeGreaterThanOrEqual(1);
      expect(maxOutstanding).toBeLessThanOrEqual(2);
    } finally {
      await t.dispose();
    }
  });

  it('withRetry does not retry a put whose data the store already took', async () => {
    let calls = 0;
    const inner = fakeStore({
      putIfAbsent: async (_id, _data, o) => {
        calls++;
        o?.onDataTaken?.();
        throw new ChunkStoreError('Transient', 'flush failed');
      },
    });
    const store = withRetry(inner, { baseDelayMs: 1 });
    let released = 0;
    await expect(store.putIfAbsent(ID, Buffer.from('x'), { onDataTaken: () => released++ })).rejects.toMatchObject({ kind: 'Transient' });
    expect(calls).toBe(1);
    expect(released).toBe(1);
  });
});

describe('fs store: O_DIRECT writes from aligned buffers', () => {
  const MiB = 1024 * 1024;
  /** Random bytes in an aligned slot of a pool (the backup's sealed-chunk slots), with room for the padding. */
  function alignedData(len: number): { pool: LentSlotPool; data: Buffer } {
    const pool = new LentSlotPool(1, len, 4096);
    const data = pool.buffer(0, len);
    randomFillSync(data);
    // Garbage where the padding goes: it must not reach the object.
    new Uint8Array(data.buffer, data.byteOffset + len, data.buffer.byteLength - data.byteOffset - len).fill(0xee);
    return { pool, data };
  }

  it('an aligned buffer with the alignedTail hint is written with O_DIRECT, exactly its bytes, durable by name', async () => {
    expect(addressMod(new Uint8Array(1), 4096), 'the native addon (it alone sees addresses)').toBeDefined();
    const t = await tempDir();
    try {
      const store = await FsChunkStore.open(t.dir);
      for (const len of [4 * MiB + 36, 4096, 1, 12345]) {
        const { pool, data } = alignedData(len);
        expect(pool.aligned).toBe(true);
        expect(addressMod(data, 4096)).toBe(0);
        const id = createHash('sha256').update(data).digest('hex');
        let taken = false;
        expect(await store.putIfAbsent(id, data, { alignedTail: 4096, onDataTaken: () => (taken = true) })).toBe(true);
        expect(taken).toBe(true);
        expect((await store.stat(id)).size).toBe(len);
        expect((await store.get(id)).equals(data)).toBe(true);
      }
      expect(store.writeCounters).toEqual({ direct: 4, buffered: 0 });
      // Nothing but committed objects is left (no temp file from the O_DIRECT path).
      const names = (await fsp.readdir(path.join(t.dir, 'chunks'), { recursive: true })).filter((n) => n.includes('.tmp-'));
      expect(names).toEqual([]);
    } finally {
      await t.dispose();
    }
  });

  it('falls back to buffered writes: no hint, a misaligned buffer, no room for padding, directIO off', async () => {
    const t = await tempDir();
    try {
      const store = await FsChunkStore.open(path.join(t.dir, 'a'));
      const len = 64 * 1024 + 36;
      const cases: Array<[Uint8Array, Parameters<FsChunkStore['putIfAbsent']>[2]]> = [];
      cases.push([alignedData(len).data, {}]); // no hint
      const misaligned = alignedData(len + 1).data.subarray(1); // one byte past the alignment
      cases.push([misaligned, { alignedTail: 4096 }]);
      const big = Buffer.alloc(8192);
      randomFillSync(big);
      cases.push([new Uint8Array(big.buffer, big.byteOffset, big.length), { alignedTail: 4096 }]); // Node pool memory: unaligned
      for (const [data, opts] of cases) {
        const id = createHash('sha256').update(data).digest('hex');
        expect(await store.putIfAbsent(id, data, opts)).toBe(true);
        expect((await store.get(id)).equals(Buffer.from(data))).toBe(true);
      }
      expect(store.writeCounters).toEqual({ direct: 0, buffered: 3 });
      const s = await FsChunkStore.open(path.join(t.dir, 'b'), { directIO: false });
      const { data } = alignedData(len);
      const id = createHash('sha256').update(data).digest('hex');
      expect(await s.putIfAbsent(id, data, { alignedTail: 4096 })).toBe(true);
      expect((await s.get(id)).equals(data)).toBe(true);
      expect(s.writeCounters).toEqual({ direct: 0, buffered: 1 });
    } finally {
      await t.dispose();
    }
  });

  it('without fsyncObjects (the bench "no fsync" mode) still writes aligned buffers with O_DIRECT: only the fdatasync is skipped', async () => {
    // The page-cache copy of a buffered write cost more CPU than the whole hash + seal on the reference VM, so a
    // backup without fdatasync but with buffered writes was slower than the durable one (bench/README.md).
    const t = await tempDir();
    try {
      const store = await FsChunkStore.open(t.dir, { fsyncObjects: false });
      const { data } = alignedData(4 * MiB + 36);
      const id = createHash('sha256').update(data).digest('hex');
      expect(await store.putIfAbsent(id, data, { alignedTail: 4096 })).toBe(true);
      expect((await store.get(id)).equals(data)).toBe(true);
      expect(store.writeCounters).toEqual({ direct: 1, buffered: 0 });
    } finally {
      await t.dispose();
    }
  });

  it('works the same on tmpfs (/dev/shm): O_DIRECT where the kernel allows it, else buffered, same bytes', async () => {
    const shm = '/dev/shm';
    const dir = await fsp.mkdtemp(path.join(shm, 'rsvault-direct-')).catch(() => undefined);
    if (dir === undefined) return expect(existsSync(shm)).toBe(false); // no tmpfs here: nothing to test
    try {
      const store = await FsChunkStore.open(dir);
      const { data } = alignedData(1 * MiB + 36);
      const id = createHash('sha256').update(data).digest('hex');
      expect(await store.putIfAbsent(id, data, { alignedTail: 4096 })).toBe(true);
      expect((await store.get(id)).equals(data)).toBe(true);
      expect(store.writeCounters.direct + store.writeCounters.buffered).toBe(1);
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});
