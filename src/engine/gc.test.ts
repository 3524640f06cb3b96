import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { backupImage } from './backup.js';
import { FsChunkStore } from './fs-store.js';
import { collectGarbage, FOSSIL_INDEX } from './gc.js';
import { generateStoreKeys } from './seal.js';
import { runGcSuite } from './testdata/gc-suite.js';
import { tempDir, writeImage } from './testdata/helpers.js';

const CS = 64 * 1024;

runGcSuite('fs', async () => {
  const t = await tempDir();
  return { store: await FsChunkStore.open(t.dir), dispose: t.dispose };
});

describe('garbage collection (fs)', () => {
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

  it('fossil decisions ignore file mtimes: an old-looking fossil of an unsealed generation stays; a damaged index delays, never deletes', async () => {
    const t = await tempDir();
    try {
      const root = path.join(t.dir, 'store');
      const store = await FsChunkStore.open(root);
      const keys = generateStoreKeys();
      await writeImage(path.join(t.dir, 'a.img'), [['r', 2 * CS]]);
      const a = (await backupImage({ store, keys, source: path.join(t.dir, 'a.img'), chunkSize: CS })).manifest;
      await store.fossilize(a.idHex(0));
      const ancient = new Date(Date.now() - 30 * 86_400_000);
      await fsp.utimes(path.join(root, 'trash', a.idHex(0)), ancient, ancient);
      expect(await store.removeStaleTemporaries(new Date())).toBe(0);
      const g1 = await collectGarbage({ store, liveManifests: [a], cutoff: new Date(), safetyMarginMs: 0 });
      expect(g1).toMatchObject({ resurrected: 1, swept: 0, marked: 2 });
      const g2 = await collectGarbage({ store, liveManifests: [], cutoff: new Date(), safetyMarginMs: 0 });
      expect(g2.fossilized).toBe(2);
      await store.putMeta(FOSSIL_INDEX, Buffer.from('garbage'));
      const g3 = await collectGarbage({ store, liveManifests: [], cutoff: new Date(), safetyMarginMs: 0 });
      expect(g3).toMatchObject({ swept: 0, fossilsKept: 2 });
      const g4 = await collectGarbage({ store, liveManifests: [], cutoff: new Date(), safetyMarginMs: 0 });
      expect(g4).toMatchObject({ swept: 2, fossilsKept: 0 });
    } finally {
      await t.dispose();
    }
  });
});
