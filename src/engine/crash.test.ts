/**
 * Crash safety: kill -9 a child process in the middle of backups and GCs; the store must stay
 * valid. And GC running next to backups must never remove a chunk a backup references.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { backupImage } from './backup.js';
import { ChangedBlockBitmap } from './bitmap.js';
import { FsChunkStore } from './fs-store.js';
import { collectGarbage } from './gc.js';
import { readManifestFile, type Manifest } from './manifest.js';
import { generateMasterKey, generateStoreKeys, wrapStoreKeys } from './seal.js';
import { countChunks, tempDir, writeImage } from './testdata/helpers.js';
import { verifyManifest, verifyStore } from './verify.js';

const CHILD = fileURLToPath(new URL('./testdata/crash-child.ts', import.meta.url));
const CS = 64 * 1024;

interface ChildRun {
  killed: boolean;
  completed: boolean;
}

/** Run the child; SIGKILL it `killAfterMs` after it reports ready (or let it finish if null). */
function runChild(args: string[], killAfterMs: number | null): Promise<ChildRun & { elapsedMs: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let readyAt = 0;
    let killed = false;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!readyAt && out.includes('ready')) {
        readyAt = performance.now();
        if (killAfterMs !== null) {
          setTimeout(() => {
            killed = child.kill('SIGKILL');
          }, killAfterMs);
        }
      }
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      const completed = out.includes('done');
      if (!completed && signal !== 'SIGKILL') reject(new Error(`child failed (${code}): ${err}`));
      else resolve({ killed: signal === 'SIGKILL' && killed, completed, elapsedMs: performance.now() - readyAt });
    });
  });
}

async function committed(dir: string): Promise<Manifest[]> {
  const names = (await fsp.readdir(dir)).filter((n) => n.endsWith('.manifest'));
  return Promise.all(names.map((n) => readManifestFile(path.join(dir, n))));
}

/** Rewrite a few random chunks of the image (new content → new chunks for the next backup). */
async function mutate(image: string, chunks: number): Promise<void> {
  const fh = await fsp.open(image, 'r+');
  try {
    for (let i = 0; i < 6; i++) await fh.write(randomBytes(CS), 0, CS, Math.floor(Math.random() * chunks) * CS);
  } finally {
    await fh.close();
  }
}

describe('crash safety', () => {
  it('kill -9 during backups and GCs (≥ 20 backup kills): the store verifies clean and the next backup succeeds', async () => {
    const t = await tempDir();
    try {
      const storeRoot = path.join(t.dir, 'store');
      const manifestDir = path.join(t.dir, 'manifests');
      await fsp.mkdir(manifestDir);
      const keys = generateStoreKeys();
      const master = generateMasterKey();
      const keysFile = path.join(t.dir, 'keys');
      await fsp.writeFile(keysFile, Buffer.concat([master, wrapStoreKeys(keys, master)]));
      const image = path.join(t.dir, 'disk.img');
      const chunks = 96;
      await writeImage(image, [['r', 80 * CS], ['z', 8 * CS], ['r', 8 * CS - 999]]);
      const args = (mode: string): string[] => [mode, storeRoot, keysFile, image, manifestDir];

      // One uninterrupted run to learn how long a backup takes on this machine.
      const first = await runChild(args('backup'), null);
      expect(first.completed).toBe(true);
      // Kill uniformly within the expected duration; adapt it so most runs die mid-work.
      let span = Math.max(50, first.elapsedMs);

      let backupKills = 0;
      let gcKills = 0;
      // Up to 100 runs: a fast machine finishes small incrementals within a few ms, so kills land less often.
      for (let run = 0; backupKills < 20 && run < 100; run++) {
        const gc = run % 5 === 4;
        await mutate(image, chunks);
        const r = await runChild(args(gc ? 'gc' : 'backup'), Math.random() * span);
        if (r.killed && !r.completed) {
          if (gc) gcKills++;
          else backupKills++;
          span *= 1.05;
        } else {
          span = Math.max(5, span * 0.7);
        }
      }
      expect(backupKills).toBeGreaterThanOrEqual(20);

      const store = await FsChunkStore.open(storeRoot);
      const manifests = await committed(manifestDir);
      expect(manifests.length).toBeGreaterThan(0);
      for (const m of manifests) {
        const v = await verifyManifest({ store, keys, manifest: m });
        expect(v.problems).toEqual([]);
        expect(v.ok).toBe(true);
      }
      const sv = await verifyStore({ store, keys });
      expect(sv.bad).toEqual([]);
      expect(sv.objectsChecked).toBeGreaterThan(0);
      // The next backup succeeds and is complete.
      await mutate(image, chunks);
      const next = await runChild(args('backup'), null);
      expect(next.completed).toBe(true);
      const all = await committed(manifestDir);
      expect(all.length).toBe(manifests.length + 1);
      for (const m of all) expect((await verifyManifest({ store, keys, manifest: m })).ok).toBe(true);
      // A GC after all this keeps every committed manifest restorable.
      await collectGarbage({ store, liveManifests: all, cutoff: new Date(), safetyMarginMs: 0 });
      for (const m of all) expect((await verifyManifest({ store, keys, manifest: m })).ok).toBe(true);
      expect(gcKills + backupKills).toBeGreaterThanOrEqual(20);
    } finally {
      await t.dispose();
    }
  }, 240_000);

  it('GC concurrent with a backup never removes a chunk the backup references (20 runs)', async () => {
    const t = await tempDir();
    try {
      const storeRoot = path.join(t.dir, 'store');
      const store = await FsChunkStore.open(storeRoot);
      const keys = generateStoreKeys();
      const image = path.join(t.dir, 'disk.img');
      const other = path.join(t.dir, 'other.img');
      const chunks = 48;
      await writeImage(other, [['r', 8 * CS]]);
      const live = (await backupImage({ store, keys, source: other, chunkSize: CS })).manifest;
      await writeImage(image, [['r', chunks * CS]]);
      let prev = (await backupImage({ store, keys, source: image, chunkSize: CS })).manifest;
      let sweptTotal = 0;
      for (let run = 0; run < 20; run++) {
        // `prev` is pruned (not live): only fossil generations protect the chunks the next
        // backup reuses from it (what GC fossilizes under it, reads resurrect).
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
        const gc = await collectGarbage({ store, liveManifests: [live], cutoff: backupStart, safetyMarginMs: 1000 });
        const { manifest } = await backup;
        sweptTotal += gc.swept;
        const v = await verifyManifest({ store, keys, manifest });
        expect(v.problems, `run ${run}`).toEqual([]);
        expect((await verifyManifest({ store, keys, manifest: live })).ok).toBe(true);
        prev = manifest;
      }
      // GC did real work: the replaced chunks of pruned manifests went away.
      expect(sweptTotal).toBeGreaterThan(0);
      expect(await countChunks(storeRoot)).toBeLessThanOrEqual(chunks + 8 + 4);
      await collectGarbage({ store, liveManifests: [live, prev], cutoff: new Date(), safetyMarginMs: 0 });
      await collectGarbage({ store, liveManifests: [live, prev], cutoff: new Date(), safetyMarginMs: 0 });
      expect(await countChunks(storeRoot)).toBe(chunks + 8);
      expect(await fsp.readdir(path.join(storeRoot, 'trash'))).toEqual([]);
    } finally {
      await t.dispose();
    }
  }, 120_000);
});
