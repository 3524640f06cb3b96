import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { backupImage } from './backup.js';
import { FsChunkStore } from './fs-store.js';
import { collectGarbage } from './gc.js';
import { generateStoreKeys } from './seal.js';
import { ageChunks, chunkPath, countChunks, tempDir, writeImage } from './testdata/helpers.js';
import { verifyManifest } from './verify.js';

const CS = 64 * 1024;

describe('garbage collection', () => {
  it('with no safety margin, chunks marked in the very millisecond of the cutoff are kept (mtime rounding)', async () => {
    const t = await tempDir();
    try {
      const storeRoot = path.join(t.dir, 'store');
      const store = await FsChunkStore.open(storeRoot);
      const keys = generateStoreKeys();
      await writeImage(path.join(t.dir, 'a.img'), [['r', 64 * CS]]);
      const a = (await backupImage({ store, keys, source: path.join(t.dir, 'a.img'), chunkSize: CS })).manifest;
      for (let round = 0; round < 10; round++) {
        await ageChunks(storeRoot, new Date(Date.now() - 3_600_000));
        const stats = await collectGarbage({ store, liveManifests: [a], cutoff: new Date(), safetyMarginMs: 0 });
        expect(stats).toMatchObject({ marked: 64, swept: 0 });
      }
      expect((await verifyManifest({ store, keys, manifest: a })).ok).toBe(true);
    } finally {
      await t.dispose();
    }
  });

  it('sweeps old unreferenced chunks, keeps live and recent ones, reports missing references', async () => {
    const t = await tempDir();
    try {
      const storeRoot = path.join(t.dir, 'store');
      const store = await FsChunkStore.open(storeRoot);
      const keys = generateStoreKeys();
      await writeImage(path.join(t.dir, 'a.img'), [['r', 6 * CS]]);
      await writeImage(path.join(t.dir, 'b.img'), [['r', 4 * CS], ['z', CS]]);
      const a = (await backupImage({ store, keys, source: path.join(t.dir, 'a.img'), chunkSize: CS })).manifest;
      const b = (await backupImage({ store, keys, source: path.join(t.dir, 'b.img'), chunkSize: CS })).manifest;
      await ageChunks(storeRoot, new Date(Date.now() - 3_600_000));
      // A chunk written "during" this GC (recent mtime) is never swept even if unreferenced.
      await writeImage(path.join(t.dir, 'c.img'), [['r', CS]]);
      const c = (await backupImage({ store, keys, source: path.join(t.dir, 'c.img'), chunkSize: CS })).manifest;
      // A stale temp file from a crashed write.
      const tmp = path.join(storeRoot, 'chunks', a.idHex(0).slice(0, 4), `.tmp-${a.idHex(0)}-dead`);
      await fsp.writeFile(tmp, 'x');
      await fsp.utimes(tmp, new Date(Date.now() - 3_600_000), new Date(Date.now() - 3_600_000));

      const dry = await collectGarbage({ store, liveManifests: [b], cutoff: new Date(), safetyMarginMs: 60_000, dryRun: true });
      expect(dry.swept).toBe(6);
      expect(await countChunks(storeRoot)).toBe(11);

      const stats = await collectGarbage({ store, liveManifests: (async function* () { yield b; })(), cutoff: new Date(), safetyMarginMs: 60_000 });
      expect(stats).toMatchObject({ manifests: 1, marked: 4, missing: 0, swept: 6, temporariesRemoved: 1 });
      expect(stats.kept).toBe(5); // b's 4 (touched by mark) + c's 1 (recent)
      expect(await countChunks(storeRoot)).toBe(5);
      expect((await verifyManifest({ store, keys, manifest: b })).ok).toBe(true);
      expect((await verifyManifest({ store, keys, manifest: c })).ok).toBe(true);
      expect((await verifyManifest({ store, keys, manifest: a })).ok).toBe(false);

      // A live manifest whose chunk is gone is reported, not hidden.
      await fsp.rm(await chunkPath(storeRoot, b.idHex(1)));
      const again = await collectGarbage({ store, liveManifests: [b], cutoff: new Date(), safetyMarginMs: 60_000 });
      expect(again.missing).toBe(1);
    } finally {
      await t.dispose();
    }
  });

  it('the cutoff is capped at the GC start minus the safety margin', async () => {
    const t = await tempDir();
    try {
      const store = await FsChunkStore.open(path.join(t.dir, 'store'));
      const before = Date.now();
      const stats = await collectGarbage({ store, liveManifests: [], cutoff: new Date(Date.now() + 3_600_000) });
      expect(stats.effectiveCutoff.getTime()).toBeLessThanOrEqual(before + 1000 - 60_000);
    } finally {
      await t.dispose();
    }
  });
});
