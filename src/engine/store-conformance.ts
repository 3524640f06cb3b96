/**
 * The conformance suite every ChunkStore backend runs (restic's backend test suite, hono's
 * runTest). It is framework-neutral so it can live in src/ without a test-runner import: pass
 * your runner's `describe`/`it` (vitest: `runChunkStoreConformance('fs', make, { describe, it })`).
 * Assertions use node:assert.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { ChunkStoreError } from './errors.js';
import type { ChunkStore } from './store.js';

export interface TestApi {
  describe: (name: string, body: () => void) => void;
  it: (name: string, body: () => Promise<void>) => void;
}

export interface StoreFixture {
  store: ChunkStore;
  /** Clean up (delete the backing data). */
  dispose(): Promise<void>;
}

function id(): string {
  return randomBytes(32).toString('hex');
}

async function kindOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'resolved';
  } catch (err) {
    return err instanceof ChunkStoreError ? err.kind : `other:${String(err)}`;
  }
}

export function runChunkStoreConformance(name: string, makeStore: () => Promise<StoreFixture>, t: TestApi): void {
  const withStore = (body: (s: ChunkStore) => Promise<void>) => async () => {
    const f = await makeStore();
    try {
      await body(f.store);
    } finally {
      await f.dispose();
    }
  };

  t.describe(`ChunkStore conformance: ${name}`, () => {
    t.it('put, get, has, stat round trip', withStore(async (s) => {
      const a = id();
      const data = randomBytes(100_000);
      assert.equal(await s.has(a), false);
      assert.equal(await s.putIfAbsent(a, data), true);
      assert.equal(await s.has(a), true);
      assert.deepEqual(await s.get(a), data);
      const st = await s.stat(a);
      assert.equal(st.size, data.length);
      assert.ok(Math.abs(st.mtimeMs - Date.now()) < 60_000);
    }));

    t.it('empty objects are fine', withStore(async (s) => {
      const a = id();
      assert.equal(await s.putIfAbsent(a, new Uint8Array(0)), true);
      assert.equal((await s.get(a)).length, 0);
    }));

    t.it('putIfAbsent on an existing id returns false, keeps the object and touches it', withStore(async (s) => {
      const a = id();
      await s.putIfAbsent(a, Buffer.from('first'));
      const before = (await s.stat(a)).mtimeMs;
      await sleep(30);
      assert.equal(await s.putIfAbsent(a, Buffer.from('first')), false);
      assert.deepEqual(await s.get(a), Buffer.from('first'));
      assert.ok((await s.stat(a)).mtimeMs > before, 'mtime advanced');
    }));

    t.it('touch refreshes mtime and reports absence', withStore(async (s) => {
      const a = id();
      assert.equal(await s.touch(a), false);
      await s.putIfAbsent(a, Buffer.from('x'));
      const before = (await s.stat(a)).mtimeMs;
      await sleep(30);
      assert.equal(await s.touch(a), true);
      assert.ok((await s.stat(a)).mtimeMs > before);
    }));

    t.it('missing objects are NotFound', withStore(async (s) => {
      assert.equal(await kindOf(s.get(id())), 'NotFound');
      assert.equal(await kindOf(s.stat(id())), 'NotFound');
      assert.equal(await s.delete(id()), 'absent');
    }));

    t.it('invalid ids are Permanent errors', withStore(async (s) => {
      for (const bad of ['', 'abc', 'A'.repeat(64), '../' + 'a'.repeat(61), 'g'.repeat(64)]) {
        assert.equal(await kindOf(s.get(bad)), 'Permanent', bad);
        assert.equal(await kindOf(s.putIfAbsent(bad, Buffer.from('x'))), 'Permanent', bad);
      }
    }));

    t.it('list yields every committed id once', withStore(async (s) => {
      const ids = Array.from({ length: 40 }, id);
      await Promise.all(ids.map((x) => s.putIfAbsent(x, Buffer.from(x))));
      await s.sync();
      const seen: string[] = [];
      for await (const x of s.list()) seen.push(x);
      assert.deepEqual(seen.sort(), [...ids].sort());
    }));

    t.it('a touch in the very millisecond of a conditional delete\'s cutoff keeps the object (mtime read-back rounding)', withStore(async (s) => {
      const a = id();
      await s.putIfAbsent(a, Buffer.from('a'));
      for (let i = 0; i < 200; i++) {
        const cutoff = new Date();
        assert.equal(await s.touch(a), true);
        assert.equal(await s.delete(a, { unmodifiedSince: cutoff }), 'kept', `round ${i}`);
      }
    }));

    t.it('delete removes; conditional delete respects the modification time', withStore(async (s) => {
      const a = id();
      const b = id();
      await s.putIfAbsent(a, Buffer.from('a'));
      await s.putIfAbsent(b, Buffer.from('b'));
      const past = new Date(Date.now() - 3_600_000);
      assert.equal(await s.delete(a, { unmodifiedSince: past }), 'kept');
      assert.equal(await s.has(a), true);
      const future = new Date(Date.now() + 3_600_000);
      assert.equal(await s.delete(a, { unmodifiedSince: future }), 'deleted');
      assert.equal(await s.has(a), false);
      assert.equal(await s.delete(b), 'deleted');
      assert.equal(await s.delete(b), 'absent');
      for await (const x of s.list()) assert.ok(x !== a && x !== b);
    }));

    t.it('concurrent puts of the same id leave one valid object', withStore(async (s) => {
      const a = id();
      const data = randomBytes(300_000);
      const results = await Promise.all(Array.from({ length: 8 }, () => s.putIfAbsent(a, data)));
      assert.ok(results.includes(true));
      assert.deepEqual(await s.get(a), data);
      let n = 0;
      for await (const x of s.list()) if (x === a) n++;
      assert.equal(n, 1);
    }));

    t.it('a touch racing a conditional delete: a successful touch always keeps the object', withStore(async (s) => {
      for (let round = 0; round < 20; round++) {
        const a = id();
        await s.putIfAbsent(a, Buffer.from('race'));
        await sleep(15);
        const cutoff = new Date(); // the object is older than this; a touch makes it newer
        await sleep(15);
        const [touched, deleted] = await Promise.all([s.touch(a), s.delete(a, { unmodifiedSince: cutoff })]);
        const present = await s.has(a);
        if (touched) assert.equal(present, true, 'touched but swept');
        assert.equal(present, deleted !== 'deleted');
      }
    }));

    t.it('readInto (when offered) reads like get and reports the size of a too-large object', withStore(async (s) => {
      if (!s.readInto) return;
      const a = id();
      const data = randomBytes(5000);
      await s.putIfAbsent(a, data);
      const buf = Buffer.alloc(6000);
      assert.equal(await s.readInto(a, buf), 5000);
      assert.deepEqual(buf.subarray(0, 5000), data);
      assert.equal(await s.readInto(a, Buffer.alloc(10)), 5000);
      assert.equal(await kindOf(s.readInto(id(), buf)), 'NotFound');
    }));

    t.it('sync succeeds with and without pending writes', withStore(async (s) => {
      await s.sync();
      await s.putIfAbsent(id(), Buffer.from('x'));
      await s.sync();
    }));
  });
}
