/**
 * The conformance suite every ChunkStore backend runs (restic's backend test suite, hono's
 * runTest). It is framework-neutral so it can live in src/ without a test-runner import: pass
 * your runner's `describe`/`it` (vitest: `runChunkStoreConformance('fs', make, { describe, it })`).
 * Assertions use node:assert.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
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

export interface ConformanceOptions {
  /** Rounds of the race tests (default 20; remote stores may run fewer to keep CI time down). */
  raceRounds?: number;
}

export function runChunkStoreConformance(name: string, makeStore: () => Promise<StoreFixture>, t: TestApi, options: ConformanceOptions = {}): void {
  const rounds = options.raceRounds ?? 20;
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
      assert.ok(Number.isFinite(st.mtimeMs));
    }));

    t.it('empty objects are fine', withStore(async (s) => {
      const a = id();
      assert.equal(await s.putIfAbsent(a, new Uint8Array(0)), true);
      assert.equal((await s.get(a)).length, 0);
    }));

    t.it('putIfAbsent on an existing id returns false and keeps the object', withStore(async (s) => {
      const a = id();
      await s.putIfAbsent(a, Buffer.from('first'));
      assert.equal(await s.putIfAbsent(a, Buffer.from('first')), false);
      assert.deepEqual(await s.get(a), Buffer.from('first'));
    }));

    t.it('touch reports presence', withStore(async (s) => {
      const a = id();
      assert.equal(await s.touch(a), false);
      await s.putIfAbsent(a, Buffer.from('x'));
      assert.equal(await s.touch(a), true);
    }));

    t.it('missing objects are NotFound', withStore(async (s) => {
      assert.equal(await kindOf(s.get(id())), 'NotFound');
      assert.equal(await kindOf(s.stat(id())), 'NotFound');
      assert.equal(await s.delete(id()), 'absent');
      assert.equal(await kindOf(s.getMeta('no/such/thing')), 'NotFound');
    }));

    t.it('invalid ids and metadata names are Permanent errors', withStore(async (s) => {
      for (const bad of ['', 'abc', 'A'.repeat(64), '../' + 'a'.repeat(61), 'g'.repeat(64)]) {
        assert.equal(await kindOf(s.get(bad)), 'Permanent', bad);
        assert.equal(await kindOf(s.putIfAbsent(bad, Buffer.from('x'))), 'Permanent', bad);
        assert.equal(await kindOf(s.fossilize(bad)), 'Permanent', bad);
      }
      for (const bad of ['', '../x', 'a/../b', '/abs', 'a//b', '.hidden', 'a/.tmp', 'sp ace']) {
        assert.equal(await kindOf(s.putMeta(bad, Buffer.from('x'))), 'Permanent', bad);
        assert.equal(await kindOf(s.getMeta(bad)), 'Permanent', bad);
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

    t.it('delete removes', withStore(async (s) => {
      const a = id();
      await s.putIfAbsent(a, Buffer.from('a'));
      assert.equal(await s.delete(a), 'deleted');
      assert.equal(await s.has(a), false);
      assert.equal(await s.delete(a), 'absent');
      for await (const x of s.list()) assert.notEqual(x, a);
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

    t.it('a name only ever points at complete bytes: reads racing a put see nothing or everything', withStore(async (s) => {
      for (let round = 0; round < 3; round++) {
        const a = id();
        const data = randomBytes(3 * 1024 * 1024 + 17);
        let done = false;
        const put = s.putIfAbsent(a, data).finally(() => (done = true));
        let seen = 0;
        while (!done) {
          try {
            const got = await s.get(a);
            assert.ok(got.equals(data), 'a partial or wrong object was readable');
            seen++;
          } catch (err) {
            assert.ok(err instanceof ChunkStoreError && err.kind === 'NotFound', String(err));
          }
        }
        await put;
        assert.ok((await s.get(a)).equals(data));
        assert.ok(seen >= 0);
      }
    }));

    t.it('fossils: fossilize hides a chunk from list, reads resurrect it, deleteFossil removes it for good', withStore(async (s) => {
      const a = id();
      const b = id();
      const data = randomBytes(10_000);
      await s.putIfAbsent(a, data);
      await s.putIfAbsent(b, Buffer.from('b'));
      assert.equal(await s.fossilize(id()), false);
      assert.equal(await s.resurrect(id()), false);
      assert.equal(await s.fossilize(a), true);
      await s.sync();
      const live: string[] = [];
      for await (const x of s.list()) live.push(x);
      assert.deepEqual(live, [b]);
      const fossils: string[] = [];
      for await (const x of s.listFossils()) fossils.push(x);
      assert.deepEqual(fossils, [a]);
      // A read brings it back (a backup that relied on it before GC moved it).
      assert.deepEqual(await s.get(a), data);
      assert.equal(await s.has(a), true);
      // Fossilize again, delete the fossil: gone everywhere.
      assert.equal(await s.fossilize(a), true);
      assert.equal(await s.deleteFossil(a), true);
      assert.equal(await s.deleteFossil(a), false);
      assert.equal(await s.has(a), false);
      assert.equal(await kindOf(s.get(a)), 'NotFound');
      // putIfAbsent of a fossilized chunk makes it live again (written anew or resurrected).
      assert.equal(await s.fossilize(b), true);
      await s.putIfAbsent(b, Buffer.from('b'));
      assert.equal(await s.has(b), true);
      assert.deepEqual(await s.get(b), Buffer.from('b'));
    }));

    t.it(`a chunk racing between fossilize, resurrecting reads and puts is never lost (${rounds} rounds)`, withStore(async (s) => {
      for (let round = 0; round < rounds; round++) {
        const a = id();
        const data = randomBytes(50_000);
        await s.putIfAbsent(a, data);
        const ops: Promise<unknown>[] = [s.fossilize(a), s.has(a), s.get(a).catch(() => undefined), s.putIfAbsent(a, data), s.resurrect(a)];
        if (round % 2 === 0) ops.reverse();
        await Promise.all(ops);
        let inTrash = false;
        for await (const f of s.listFossils()) if (f === a) inTrash = true;
        const live = await s.has(a);
        assert.ok(live || inTrash, `round ${round}: lost`);
        assert.deepEqual(await s.get(a), data);
      }
    }));

    t.it(`a resurrecting read racing deleteFossil either gets the whole chunk or NotFound (${rounds} rounds)`, withStore(async (s) => {
      for (let round = 0; round < rounds; round++) {
        const a = id();
        const data = randomBytes(50_000);
        await s.putIfAbsent(a, data);
        await s.fossilize(a);
        const [got] = await Promise.all([s.get(a).then((d) => d, (err: unknown) => err), s.deleteFossil(a)]);
        if (got instanceof Buffer) assert.deepEqual(got, data);
        else assert.ok(got instanceof ChunkStoreError && got.kind === 'NotFound', String(got));
        const after = await s.get(a).then((d) => d, (err: unknown) => err);
        if (after instanceof Buffer) assert.deepEqual(after, data);
      }
    }));

    t.it('metadata objects: put replaces, get, list by prefix, delete', withStore(async (s) => {
      await s.putMeta('manifests/100/os.manifest', Buffer.from('one'));
      await s.putMeta('manifests/100/os.manifest', Buffer.from('two'));
      await s.putMeta('manifests/100/lun0.manifest', Buffer.from('lun0'));
      await s.putMeta('manifests/101/os.manifest', Buffer.from('other'));
      await s.putMeta('gc/fossils', Buffer.alloc(0));
      assert.deepEqual(await s.getMeta('manifests/100/os.manifest'), Buffer.from('two'));
      const list = async (p: string): Promise<string[]> => {
        const out: string[] = [];
        for await (const n of s.listMeta(p)) out.push(n);
        return out.sort();
      };
      assert.deepEqual(await list('manifests/100/'), ['manifests/100/lun0.manifest', 'manifests/100/os.manifest']);
      assert.deepEqual(await list('manifests/'), ['manifests/100/lun0.manifest', 'manifests/100/os.manifest', 'manifests/101/os.manifest']);
      assert.deepEqual(await list(''), ['gc/fossils', 'manifests/100/lun0.manifest', 'manifests/100/os.manifest', 'manifests/101/os.manifest']);
      assert.equal(await s.deleteMeta('manifests/101/os.manifest'), true);
      assert.equal(await s.deleteMeta('manifests/101/os.manifest'), false);
      assert.equal(await kindOf(s.getMeta('manifests/101/os.manifest')), 'NotFound');
      // Metadata never shows up as chunks or fossils.
      for await (const x of s.list()) assert.fail(`unexpected chunk ${x}`);
      for await (const x of s.listFossils()) assert.fail(`unexpected fossil ${x}`);
    }));

    t.it('concurrent metadata replaces leave one complete version', withStore(async (s) => {
      const versions = Array.from({ length: 6 }, () => randomBytes(200_000));
      await Promise.all(versions.map((v) => s.putMeta('gc/state', v)));
      const got = await s.getMeta('gc/state');
      assert.ok(versions.some((v) => v.equals(got)));
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
