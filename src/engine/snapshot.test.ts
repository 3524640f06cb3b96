import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { backupImage } from './backup.js';
import { BITMAP_BLOCK_SIZE } from './bitmap.js';
import { FsChunkStore } from './fs-store.js';
import { restoreImage } from './restore.js';
import { generateStoreKeys } from './seal.js';
import { createSnapshot, type Snapshot } from './snapshot.js';
import { imageDigest, tempDir, writeImage } from './testdata/helpers.js';

const B = BITMAP_BLOCK_SIZE;

/** What compute's guest I/O does: tell the snapshot, then write. */
async function guestWrite(file: string, snap: Snapshot, offset: number, data: Buffer): Promise<void> {
  await snap.beforeWrite(offset, data.length);
  const fh = await fsp.open(file, 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
  } finally {
    await fh.close();
  }
}

async function readAll(snap: Snapshot): Promise<Buffer> {
  const out = Buffer.alloc(snap.size);
  // Odd-sized reads on purpose: they straddle block boundaries.
  for (let off = 0; off < snap.size; off += 100_003) await snap.read(out.subarray(off, Math.min(snap.size, off + 100_003)), off);
  return out;
}

async function reflinkSupported(dir: string): Promise<boolean> {
  const a = path.join(dir, 'probe-a');
  await fsp.writeFile(a, 'x');
  try {
    await fsp.copyFile(a, path.join(dir, 'probe-b'), fsp.constants.COPYFILE_FICLONE_FORCE);
    return true;
  } catch {
    return false;
  }
}

describe('snapshots', () => {
  it('copy-on-write side file: the snapshot keeps the content of the moment it was taken', async () => {
    const t = await tempDir();
    try {
      const live = path.join(t.dir, 'disk.img');
      const original = await writeImage(live, [['r', 20 * B + 123]]);
      const snap = await createSnapshot(live, { mode: 'cow' });
      expect(snap.kind).toBe('cow');
      expect(snap.size).toBe(original.length);
      await guestWrite(live, snap, B - 10, Buffer.alloc(20, 1)); // straddles blocks 0/1
      await guestWrite(live, snap, 5 * B, Buffer.alloc(3 * B, 2));
      await guestWrite(live, snap, 20 * B + 100, Buffer.alloc(23, 3)); // partial last block
      await guestWrite(live, snap, 5 * B + 7, Buffer.alloc(10, 4)); // block already preserved
      expect((await readAll(snap)).equals(original)).toBe(true);
      const now = await fsp.readFile(live);
      expect(now.equals(original)).toBe(false);
      const sideFiles = (await fsp.readdir(t.dir)).filter((n) => n.includes('.snap-'));
      expect(sideFiles).toHaveLength(1);
      await snap.release();
      expect((await fsp.readdir(t.dir)).filter((n) => n.includes('.snap-'))).toHaveLength(0);
      // After release the writer's hook is a no-op.
      await snap.beforeWrite(0, 10);
    } finally {
      await t.dispose();
    }
  });

  it('a backup of a cow snapshot while the guest keeps writing restores the point-in-time image', async () => {
    const t = await tempDir();
    try {
      const live = path.join(t.dir, 'disk.img');
      const original = await writeImage(live, [['r', 64 * B], ['z', 8 * B], ['r', 1000]]);
      const store = await FsChunkStore.open(path.join(t.dir, 'store'));
      const keys = generateStoreKeys();
      const snap = await createSnapshot(live, { mode: 'cow' });
      let writing = true;
      const writer = (async () => {
        let n = 0;
        while (writing) {
          const off = Math.floor(Math.random() * (original.length - 5000));
          await guestWrite(live, snap, off, randomBytes(1 + Math.floor(Math.random() * 5000)));
          n++;
          if (n % 8 === 0) await new Promise((r) => setImmediate(r));
        }
        return n;
      })();
      const { manifest } = await backupImage({ store, keys, source: snap, chunkSize: 4 * B, readAhead: 2 });
      writing = false;
      const writes = await writer;
      expect(writes).toBeGreaterThan(0);
      await snap.release();
      expect(manifest.imageDigest?.equals(imageDigest(original, 4 * B))).toBe(true);
      await restoreImage({ store, keys, manifest, target: path.join(t.dir, 'r.img') });
      expect((await fsp.readFile(path.join(t.dir, 'r.img'))).equals(original)).toBe(true);
    } finally {
      await t.dispose();
    }
  });

  it('reflink: used when the filesystem can clone, else forced mode fails and auto falls back to cow', async () => {
    const t = await tempDir();
    try {
      const live = path.join(t.dir, 'disk.img');
      const original = await writeImage(live, [['r', 4 * B]]);
      if (await reflinkSupported(t.dir)) {
        const snap = await createSnapshot(live, { mode: 'reflink' });
        expect(snap.kind).toBe('reflink');
        await fsp.writeFile(live, Buffer.alloc(4 * B, 9));
        expect((await readAll(snap)).equals(original)).toBe(true);
        await snap.release();
      } else {
        await expect(createSnapshot(live, { mode: 'reflink' })).rejects.toMatchObject({ code: 'SnapshotFailed' });
        const snap = await createSnapshot(live);
        expect(snap.kind).toBe('cow');
        await snap.release();
      }
      expect((await fsp.readdir(t.dir)).filter((n) => n.includes('.snap-'))).toHaveLength(0);
    } finally {
      await t.dispose();
    }
  });

  it('reflink on a real reflink filesystem (loop-mounted XFS): a backup of the clone restores the point-in-time image while the guest writes', async () => {
    await withXfs(async (dir) => {
      const live = path.join(dir, 'disk.img');
      const original = await writeImage(live, [['r', 24 * B], ['z', 8 * B], ['r', 5 * B + 17]]);
      const auto = await createSnapshot(live);
      expect(auto.kind).toBe('reflink'); // auto picks the clone where the filesystem has it
      await auto.release();
      const snap = await createSnapshot(live, { mode: 'reflink' });
      expect(snap.kind).toBe('reflink');
      // The guest keeps writing to the live image; the clone does not see it (no beforeWrite needed).
      const fh = await fsp.open(live, 'r+');
      await fh.write(Buffer.alloc(3 * B, 7), 0, 3 * B, 2 * B);
      await fh.write(randomBytes(B), 0, B, 26 * B);
      await fh.close();
      const store = await FsChunkStore.open(path.join(dir, 'store'));
      const keys = generateStoreKeys();
      const { manifest } = await backupImage({ store, keys, source: snap, chunkSize: 4 * B });
      await snap.release();
      expect(manifest.imageDigest?.equals(imageDigest(original, 4 * B))).toBe(true);
      await restoreImage({ store, keys, manifest, target: path.join(dir, 'r.img') });
      expect((await fsp.readFile(path.join(dir, 'r.img'))).equals(original)).toBe(true);
      expect((await fsp.readFile(live)).equals(original)).toBe(false);
      expect((await fsp.readdir(dir)).filter((n) => n.includes('.snap-'))).toHaveLength(0);
    });
  });
});

/**
 * Run `fn` in a fresh 320 MiB (sparse) XFS (reflink=1) loop-mounted at a temp dir. Needs root and xfsprogs,
 * as CI has (scripts/install-test-deps.sh); elsewhere it fails and says so rather than skip.
 */
async function withXfs(fn: (dir: string) => Promise<void>): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('this test loop-mounts an XFS image: run the suite as root (CI does), with xfsprogs installed');
  const base = await fsp.mkdtemp(path.join(os.tmpdir(), 'rsvault-xfs-'));
  const img = path.join(base, 'fs.img');
  const mnt = path.join(base, 'mnt');
  await fsp.mkdir(mnt);
  await fsp.writeFile(img, '');
  await fsp.truncate(img, 320 * 1024 * 1024); // mkfs.xfs wants > 300 MB; sparse, so it costs nothing
  let mounted = false;
  try {
    execFileSync('mkfs.xfs', ['-q', '-m', 'reflink=1', img], { stdio: 'pipe' });
    execFileSync('mount', ['-o', 'loop', img, mnt], { stdio: 'pipe' });
    mounted = true;
    expect(await reflinkSupported(mnt)).toBe(true);
    await fn(mnt);
  } finally {
    if (mounted) execFileSync('umount', [mnt], { stdio: 'pipe' });
    await fsp.rm(base, { recursive: true, force: true });
  }
}
