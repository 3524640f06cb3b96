/**
 * Backup + verify/quarantine + GC at the same time on one store (README concurrency matrix): whatever the
 * interleaving, after one more backup of the same data every manifest — including those committed during the race —
 * verifies and restores byte for byte.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backupImage } from './backup.js';
import { FsChunkStore } from './fs-store.js';
import { collectGarbage } from './gc.js';
import type { Manifest } from './manifest.js';
import { listQuarantine, quarantineChunk } from './quarantine.js';
import { restoreImage } from './restore.js';
import { generateStoreKeys } from './seal.js';
import { tempDir, writeImage } from './testdata/helpers.js';
import { verifyManifest } from './verify.js';

const CS = 64 * 1024;
let root: string;
let dispose: () => Promise<void>;
beforeAll(async () => {
  ({ dir: root, dispose } = await tempDir());
});
afterAll(async () => dispose());

describe('verify + quarantine racing backups and GC', () => {
  for (const round of [0, 1, 2]) {
    it(`round ${round}: damaged chunks are repaired by the next backup; nothing committed during the race is lost`, async () => {
      const dir = path.join(root, `r${round}`);
      await fsp.mkdir(dir);
      const store = await FsChunkStore.open(path.join(dir, 'store'));
      const keys = generateStoreKeys();
      const img = path.join(dir, 'disk.img');
      const data = await writeImage(img, [['r', 48 * CS]]);
      const { manifest: m1 } = await backupImage({ store, keys, source: img, chunkSize: CS });
      // Damage 6 chunks on disk.
      const damaged = [1, 5, 9, 20, 33, 47].map((i) => m1.idHex(i));
      for (const id of damaged) {
        const f = path.join(dir, 'store', 'chunks', id.slice(0, 4), id);
        const b = await fsp.readFile(f);
        b[40 + round]! ^= 0xff;
        await fsp.writeFile(f, b);
      }
      const t0 = new Date();
      const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));
      const verifyAndQuarantine = async (): Promise<number> => {
        await delay(round * 3);
        const rep = await verifyManifest({ store, keys, manifest: m1 });
        let q = 0;
        for (const p of rep.problems) if (p.code === 'UserErrorChunkCorrupted' && (await quarantineChunk(store, p.chunkId)) !== 'absent') q++;
        return q;
      };
      const during: Manifest[] = [];
      const backup = async (wait: number) => {
        await delay(wait);
        during.push((await backupImage({ store, keys, source: img, chunkSize: CS, previous: m1 })).manifest);
      };
      const gc = async () => {
        await delay(round * 2);
        return collectGarbage({ store, liveManifests: [m1, ...during], cutoff: t0, safetyMarginMs: 0 });
      };
      const [quarantined] = await Promise.all([verifyAndQuarantine(), backup(0), backup(round * 4), gc()]);
      expect(quarantined).toBe(damaged.length);
      expect((await listQuarantine(store)).sort()).toEqual([...damaged].sort());
      const { manifest: last } = await backupImage({ store, keys, source: img, chunkSize: CS, previous: m1 });
      for (const m of [m1, ...during, last]) {
        const rep = await verifyManifest({ store, keys, manifest: m });
        expect(rep.ok, JSON.stringify(rep.problems.slice(0, 2))).toBe(true);
      }
      const target = path.join(dir, 'restored.img');
      await restoreImage({ store, keys, manifest: during[0]!, target });
      expect((await fsp.readFile(target)).equals(data)).toBe(true);
    }, 60_000);
  }
});
