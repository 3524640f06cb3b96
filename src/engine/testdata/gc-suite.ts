/**
 * GC behaviour every store must show (run by gc.test.ts on fs and by object-store.test.ts on
 * Azure Blob / S3): two-generation sweep, resurrection, crashed generations, the cutoff rule and
 * GC racing a backup. Vitest-only (test data, not production code).
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { backupImage } from '../backup.js';
import { ChangedBlockBitmap } from '../bitmap.js';
import { collectGarbage } from '../gc.js';
import { generateStoreKeys } from '../seal.js';
import type { ChunkStore } from '../store.js';
import { verifyManifest } from '../verify.js';
import { tempDir, writeImage } from './helpers.js';

const CS = 64 * 1024;

async function liveCount(store: ChunkStore): Promise<number> {
  let n = 0;
  for await (const _ of store.list()) n++;
  return n;
}

async function fossilCount(store: ChunkStore): Promise<number> {
  let n = 0;
  for await (const _ of store.listFossils()) n++;
  return n;
}

export function runGcSuite(name: string, makeStore: () => Promise<{ store: ChunkStore; dispose: () => Promise<void> }>, opts: { concurrencyRuns?: number } = {}): void {
  describe(`garbage collection: ${name}`, () => {
    it('two generations: unreferenced chunks become fossils, then go; live ones stay; fossils of live manifests come back; missing ones are reported', async () => {
      const t = await tempDir();
      const f = await makeStore();
      try {
        const { store } = f;
        const keys = generateStoreKeys();
        await writeImage(path.join(t.dir, 'a.img'), [['r', 6 * CS]]);
        await writeImage(path.join(t.dir, 'b.img'), [['r', 4 * CS], ['z', CS]]);
        const a = (await backupImage({ store, keys, source: path.join(t.dir, 'a.img'), chunkSize: CS })).manifest;
        const b = (await backupImage({ store, keys, source: path.join(t.dir, 'b.img'), chunkSize: CS })).manifest;

        const dry = await collectGarbage({ store, liveManifests: [b], cutoff: new Date(), safetyMarginMs: 0, dryRun: true });
        expect(dry).toMatchObject({ fossilized: 6, swept: 0, marked: 4 });
        expect(await liveCount(store)).toBe(10);

        const g1 = await collectGarbage({ store, liveManifests: (async function* () { yield b; })(), cutoff: new Date(), safetyMarginMs: 0 });
        expect(g1).toMatchObject({ manifests: 1, marked: 4, missing: 0, fossilized: 6, swept: 0 });
        expect(await liveCount(store)).toBe(4);
        expect(await fossilCount(store)).toBe(6);

        // A fossil a live manifest references (GC ran under the backup that wrote it) comes back.
        expect(await store.fossilize(b.idHex(2))).toBe(true);
        // A fossil of a GC that crashed before sealing its generation waits one more generation.
        await writeImage(path.join(t.dir, 'c.img'), [['r', CS]]);
        const c = (await backupImage({ store, keys, source: path.join(t.dir, 'c.img'), chunkSize: CS })).manifest;
        expect(await store.fossilize(c.idHex(0))).toBe(true);

        const g2 = await collectGarbage({ store, liveManifests: [b], cutoff: new Date(), safetyMarginMs: 0 });
        expect(g2).toMatchObject({ marked: 4, missing: 0, resurrected: 1, swept: 6, fossilsKept: 1, fossilized: 0 });
        expect(await fossilCount(store)).toBe(1);
        expect((await verifyManifest({ store, keys, manifest: b })).ok).toBe(true);
        expect((await verifyManifest({ store, keys, manifest: a })).ok).toBe(false);

        await new Promise((r) => setTimeout(r, 5)); // a cutoff in a later millisecond than g2's seal
        const g3 = await collectGarbage({ store, liveManifests: [b], cutoff: new Date(), safetyMarginMs: 0 });
        expect(g3).toMatchObject({ swept: 1, fossilsKept: 0 });
        expect(await fossilCount(store)).toBe(0);
        expect((await verifyManifest({ store, keys, manifest: c })).ok).toBe(false);

        // A live manifest whose chunk is gone is reported, not hidden.
        expect(await store.delete(b.idHex(1))).toBe('deleted');
        const g4 = await collectGarbage({ store, liveManifests: [b], cutoff: new Date(), safetyMarginMs: 0 });
        expect(g4.missing).toBe(1);
      } finally {
        await f.dispose();
        await t.dispose();
      }
    });

    it('fossils stay while a backup that started before their generation was sealed may still run (cutoff rule, margin)', async () => {
      const t = await tempDir();
      const f = await makeStore();
      try {
        const { store } = f;
        const keys = generateStoreKeys();
        await writeImage(path.join(t.dir, 'a.img'), [['r', 3 * CS]]);
        await backupImage({ store, keys, source: path.join(t.dir, 'a.img'), chunkSize: CS });
        const backupStart = new Date(); // a backup "running" since before g1
        const g1 = await collectGarbage({ store, liveManifests: [], cutoff: new Date(), safetyMarginMs: 0 });
        expect(g1.fossilized).toBe(3);
        const g2 = await collectGarbage({ store, liveManifests: [], cutoff: backupStart, safetyMarginMs: 0 });
        expect(g2).toMatchObject({ swept: 0, fossilsKept: 3 });
        const g3 = await collectGarbage({ store, liveManifests: [], cutoff: new Date(), safetyMarginMs: 60_000 });
        expect(g3).toMatchObject({ swept: 0, fossilsKept: 3 });
        expect(g3.effectiveCutoff.getTime()).toBeLessThanOrEqual(Date.now() - 60_000 + 1000);
        await new Promise((r) => setTimeout(r, 5)); // a cutoff in a later millisecond than the seal
        const g4 = await collectGarbage({ store, liveManifests: [], cutoff: new Date(), safetyMarginMs: 0 });
        expect(g4).toMatchObject({ swept: 3, fossilsKept: 0 });
      } finally {
        await f.dispose();
        await t.dispose();
      }
    });

    it(`GC concurrent with a backup never loses a chunk the backup references (${opts.concurrencyRuns ?? 20} runs)`, async () => {
      const t = await tempDir();
      const f = await makeStore();
      try {
        const { store } = f;
        const keys = generateStoreKeys();
        const image = path.join(t.dir, 'disk.img');
        const other = path.join(t.dir, 'other.img');
        const chunks = 48;
        await writeImage(other, [['r', 8 * CS]]);
        const live = (await backupImage({ store, keys, source: other, chunkSize: CS })).manifest;
        await writeImage(image, [['r', chunks * CS]]);
        let prev = (await backupImage({ store, keys, source: image, chunkSize: CS })).manifest;
        let sweptTotal = 0;
        for (let run = 0; run < (opts.concurrencyRuns ?? 20); run++) {
          // `prev` is pruned (not live): nothing but the backup's own references protects the chunks it reuses.
          const bitmap = new ChangedBlockBitmap(chunks * CS);
          const fh = await fsp.open(image, 'r+');
          for (let i = 0; i < 4; i++) {
            const off = Math.floor(Math.random() * chunks) * CS;
            await fh.write(randomBytes(CS), 0, CS, off);
            bitmap.markWritten(off, CS);
          }
          await fh.close();
          const backupStart = new Date();
          const useBitmap = run % 2 === 0;
          const backup = backupImage({ store, keys, source: image, chunkSize: CS, previous: prev, ...(useBitmap ? { bitmap } : {}), readAhead: 2 });
          await new Promise((r) => setTimeout(r, Math.random() * 40));
          const gc = await collectGarbage({ store, liveManifests: [live], cutoff: backupStart, safetyMarginMs: 0 });
          const { manifest } = await backup;
          sweptTotal += gc.swept;
          const v = await verifyManifest({ store, keys, manifest });
          expect(v.problems, `run ${run}`).toEqual([]);
          expect((await verifyManifest({ store, keys, manifest: live })).ok).toBe(true);
          prev = manifest;
        }
        // GC did real work: the replaced chunks of pruned manifests went away for good.
        expect(sweptTotal).toBeGreaterThan(0);
        await collectGarbage({ store, liveManifests: [live, prev], cutoff: new Date(), safetyMarginMs: 0 });
        await collectGarbage({ store, liveManifests: [live, prev], cutoff: new Date(), safetyMarginMs: 0 });
        expect(await liveCount(store)).toBe(chunks + 8);
        expect(await fossilCount(store)).toBe(0);
        expect((await verifyManifest({ store, keys, manifest: prev })).ok).toBe(true);
      } finally {
        await f.dispose();
        await t.dispose();
      }
    }, 120_000);
  });
}
