import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backupImage } from './backup.js';
import { ChangedBlockBitmap } from './bitmap.js';
import { EngineError } from './errors.js';
import { FsChunkStore } from './fs-store.js';
import { decodeManifest, encodeManifest } from './manifest.js';
import type { Progress } from './progress.js';
import { ImageReader, restoreImage, restoreToStream } from './restore.js';
import { chunkIdOf, generateStoreKeys } from './seal.js';
import { chunkPath, countChunks, imageDigest, sha256, tempDir, writeImage } from './testdata/helpers.js';
import { verifyManifest, verifyStore } from './verify.js';
import { CryptoPool, type CryptoRunner } from './pool.js';
import { Writable } from 'node:stream';

const KiB = 1024;
const CS = 64 * KiB; // small chunks keep tests fast

let root: string;
let dispose: () => Promise<void>;
beforeAll(async () => {
  ({ dir: root, dispose } = await tempDir());
});
afterAll(async () => dispose());

let n = 0;
async function fresh(): Promise<{ dir: string; store: FsChunkStore; storeRoot: string }> {
  const dir = path.join(root, `case-${n++}`);
  await fsp.mkdir(dir);
  const storeRoot = path.join(dir, 'store');
  return { dir, store: await FsChunkStore.open(storeRoot), storeRoot };
}

async function isSparse(file: string): Promise<boolean> {
  const st = await fsp.stat(file);
  return st.blocks * 512 < st.size;
}

describe('backup → restore round trips', () => {
  it('an image with holes and a size that is not a multiple of the chunk size', async () => {
    const { dir, store, storeRoot } = await fresh();
    const keys = generateStoreKeys();
    const img = path.join(dir, 'disk.img');
    const data = await writeImage(img, [['r', 3 * CS], ['z', 5 * CS], ['r', CS + 12_345], ['z', 2 * CS], ['r', 777]]);
    const { manifest, stats } = await backupImage({ store, keys, source: img, chunkSize: CS });
    expect(manifest.diskSize).toBe(data.length);
    expect(manifest.chunkCount).toBe(Math.ceil(data.length / CS));
    expect(stats.holes).toBe(5 + 1); // 5 zero chunks; the zero part after the partial chunk fills one whole chunk
    expect(stats.chunksNew + stats.holes + stats.chunksReused).toBe(manifest.chunkCount);
    expect(stats.bytesRead).toBe(data.length);
    expect(manifest.imageDigest?.equals(imageDigest(data, CS))).toBe(true);
    expect(manifest.imageDigest?.equals(sha256(data))).toBe(false);
    expect(await countChunks(storeRoot)).toBe(stats.chunksNew);
    // Sealed chunks leave aligned slots: every one (odd sizes included) is written with O_DIRECT.
    expect(store.writeCounters).toEqual({ direct: stats.chunksNew, buffered: 0 });
    const target = path.join(dir, 'restored.img');
    const rs = await restoreImage({ store, keys, manifest, target });
    expect(rs.holes).toBe(stats.holes);
    // Whole chunks are written with O_DIRECT from aligned slots; the short last one (777 B) through the page cache.
    expect(rs.directWrites).toBe(rs.chunks - 1);
    // The buffered path (directIO off, or a filesystem refusing O_DIRECT) restores the same bytes.
    const buffered = path.join(dir, 'restored-buffered.img');
    const rb = await restoreImage({ store, keys, manifest, target: buffered, directIO: false });
    expect(rb.directWrites ?? 0).toBe(0);
    expect((await fsp.readFile(buffered)).equals(data)).toBe(true);
    const back = await fsp.readFile(target);
    expect(back.equals(data)).toBe(true);
    expect(await isSparse(target)).toBe(true);
    await expect(fsp.access(`${target}.partial`)).rejects.toThrow();
    const v = await verifyManifest({ store, keys, manifest });
    expect(v).toMatchObject({ ok: true, imageDigest: 'match', holes: stats.holes, problems: [] });
  });

  it('a SHA-256 store (keys from before BLAKE3) still backs up, restores and verifies with SHA-256 ids', async () => {
    const { dir, store } = await fresh();
    const keys = generateStoreKeys('sha256');
    const img = path.join(dir, 'disk.img');
    const data = await writeImage(img, [['r', 2 * CS], ['z', CS], ['r', 999]]);
    const { manifest } = await backupImage({ store, keys, source: img, chunkSize: CS });
    expect(manifest.chunkHash).toBe('sha256');
    expect(decodeManifest(encodeManifest(manifest)).chunkHash).toBe('sha256');
    expect(manifest.imageDigest?.equals(imageDigest(data, CS, 'sha256'))).toBe(true);
    expect(manifest.idAt(0).equals(chunkIdOf(keys.idKey, data.subarray(0, CS), 'sha256'))).toBe(true);
    await restoreImage({ store, keys, manifest, target: path.join(dir, 'r.img') });
    expect((await fsp.readFile(path.join(dir, 'r.img'))).equals(data)).toBe(true);
    expect(await verifyManifest({ store, keys, manifest })).toMatchObject({ ok: true, imageDigest: 'match' });
    expect(await verifyStore({ store, keys })).toMatchObject({ ok: true });
  });

  it('a previous manifest under another chunk hash is not trusted: everything is read again', async () => {
    const { dir, store } = await fresh();
    const img = path.join(dir, 'disk.img');
    await writeImage(img, [['r', 4 * CS]]);
    const old = await backupImage({ store, keys: generateStoreKeys('sha256'), source: img, chunkSize: CS });
    const keys = generateStoreKeys('blake3');
    const bitmap = new ChangedBlockBitmap(4 * CS);
    const r = await backupImage({ store, keys, source: img, previous: old.manifest, bitmap });
    expect(r.stats.usedBitmap).toBe(false);
    expect(r.stats.bytesRead).toBe(4 * CS);
    expect(r.manifest.chunkHash).toBe('blake3');
    expect(await verifyManifest({ store, keys, manifest: r.manifest })).toMatchObject({ ok: true, imageDigest: 'match' });
  });

  it('restore flushing as it goes (background fdatasync every chunk) writes the same image', async () => {
    const { dir, store } = await fresh();
    const keys = generateStoreKeys();
    const img = path.join(dir, 'disk.img');
    const data = await writeImage(img, [['r', 6 * CS], ['z', 2 * CS], ['r', 5 * CS + 99]]);
    const { manifest } = await backupImage({ store, keys, source: img, chunkSize: CS });
    const target = path.join(dir, 'restored.img');
    const rs = await restoreImage({ store, keys, manifest, target, flushEveryBytes: CS });
    expect(rs.bytesWritten).toBe(data.length - 2 * CS);
    expect((await fsp.readFile(target)).equals(data)).toBe(true);
    await expect(fsp.access(`${target}.partial`)).rejects.toThrow();
  });

  it('an incremental without an explicit chunk size uses the previous manifest’s', async () => {
    const { dir, store } = await fresh();
    const keys = generateStoreKeys();
    const img = path.join(dir, 'disk.img');
    await writeImage(img, [['r', 4 * CS]]);
    const full = await backupImage({ store, keys, source: img, chunkSize: CS });
    const incr = await backupImage({ store, keys, source: img, previous: full.manifest });
    expect(incr.manifest.chunkSize).toBe(CS);
    expect(incr.stats.chunksNew).toBe(0);
    expect(incr.stats.chunksReused).toBe(4);
  });

  it('while the pool\'s workers boot, the calling thread hashes and seals chunks itself; once one is up, the pool does', async () => {
    const { dir, store, storeRoot } = await fresh();
    const keys = generateStoreKeys();
    const img = path.join(dir, 'disk.img');
    await writeImage(img, [['r', 6 * CS]]);
    let warmed = 0;
    let sent = 0;
    const real = new CryptoPool(1);
    try {
      // Boots only when told (after two chunks were done inline); before, a request would wait forever.
      const booting: CryptoRunner & { ready: boolean } = {
        size: 2,
        ready: false,
        warm: () => void warmed++,
        run: (body) => {
          sent++;
          return booting.ready ? real.run(body) : new Promise<never>(() => undefined);
        },
      };
      let stored = 0;
      const spy = Object.create(store) as FsChunkStore;
      spy.putIfAbsent = async (id, data, opts) => {
        if (++stored === 2) booting.ready = true;
        return store.putIfAbsent(id, data, opts);
      };
      const { manifest, stats } = await backupImage({ store: spy, keys, source: img, chunkSize: CS, pool: booting });
      expect(warmed).toBe(1);
      expect(stats.chunksNew).toBe(6);
      expect(sent).toBeGreaterThan(0); // the later chunks went to the pool
      expect(sent).toBeLessThanOrEqual(4);
      expect(await countChunks(storeRoot)).toBe(6);
      expect((await verifyManifest({ store, keys, manifest })).ok).toBe(true);
    } finally {
      await real.close();
    }
  });

  it('a restore opens chunks on the calling thread while the pool\'s workers boot', async () => {
    const { dir, store } = await fresh();
    const keys = generateStoreKeys();
    const img = path.join(dir, 'disk.img');
    await writeImage(img, [['r', 5 * CS]]);
    const { manifest } = await backupImage({ store, keys, source: img, chunkSize: CS });
    let warmed = 0;
    // Never boots: before, the restore waited for it forever.
    const booting: CryptoRunner = { size: 2, ready: false, warm: () => void warmed++, run: () => new Promise<never>(() => undefined) };
    const target = path.join(dir, 'r.img');
    const stats = await restoreImage({ store, keys, manifest, target, pool: booting });
    expect(warmed).toBe(1);
    expect(stats.chunks).toBe(5);
    expect((await fsp.readFile(target)).equals(await fsp.readFile(img))).toBe(true);
  });

  it('a 0-byte image', async () => {
    const { dir, store } = await fresh();
    const keys = generateStoreKeys();
    const img = path.join(dir, 'empty.img');
    await fsp.writeFile(img, '');
    const { manifest, stats } = await backupImage({ store, keys, source: img });
    expect(manifest.chunkCount).toBe(0);
    expect(stats.bytesRead).toBe(0);
    expect(manifest.imageDigest?.equals(imageDigest(Buffer.alloc(0), CS))).toBe(true);
    const m2 = decodeManifest(encodeManifest(manifest));
    const target = path.join(dir, 'r.img');
    await restoreImage({ store, keys, manifest: m2, target });
    expect((await fsp.stat(target)).size).toBe(0);
    expect((await verifyManifest({ store, keys, manifest: m2 })).ok).toBe(true);
  });

  it('an all-zero image stores nothing', async () => {
    const { dir, store, storeRoot } = await fresh();
    const keys = generateStoreKeys();
    const img = path.join(dir, 'zero.img');
    await writeImage(img, [['z', 10 * CS + 5]]);
    const { manifest, stats } = await backupImage({ store, keys, source: img, chunkSize: CS });
    expect(stats.holes).toBe(11);
    expect(await countChunks(storeRoot)).toBe(0);
    const target = path.join(dir, 'r.img');
    await restoreImage({ store, keys, manifest, target });
    expect((await fsp.readFile(target)).equals(Buffer.alloc(10 * CS + 5))).toBe(true);
  });

  it('range reads and streaming restore return the image bytes', async () => {
    const { dir, store } = await fresh();
    const keys = generateStoreKeys();
    const img = path.join(dir, 'disk.img');
    const data = await writeImage(img, [['r', 2 * CS], ['z', CS], ['r', 1000]]);
    const { manifest } = await backupImage({ store, keys, source: img, chunkSize: CS });
    const reader = new ImageReader(store, keys, manifest);
    for (const [off, len] of [[0, 10], [CS - 5, 10], [CS * 2 - 3, CS + 100], [data.length - 10, 100], [data.length, 5]] as const) {
      expect((await reader.read(off, len)).equals(data.subarray(off, Math.min(data.length, off + len)))).toBe(true);
    }
    const parts: Buffer[] = [];
    const sink = new Writable({ write(chunk: Buffer, _e, cb) { parts.push(chunk); cb(); } });
    await restoreToStream({ store, keys, manifest, output: sink });
    expect(Buffer.concat(parts).equals(data)).toBe(true);
  });

  it('reports throttled progress ending at the total', async () => {
    const { dir, store } = await fresh();
    const keys = generateStoreKeys();
    const img = path.join(dir, 'disk.img');
    const data = await writeImage(img, [['r', 20 * CS]]);
    const events: Progress[] = [];
    const { manifest } = await backupImage({ store, keys, source: img, chunkSize: CS, onProgress: (p) => events.push(p), progressIntervalMs: 0 });
    const last = events.at(-1);
    expect(last?.bytesDone).toBe(data.length);
    expect(last?.bytesTotal).toBe(data.length);
    expect(last?.etaSec).toBe(0);
    expect(events.length).toBeGreaterThan(1);
    const restoreEvents: Progress[] = [];
    await restoreImage({ store, keys, manifest, target: path.join(dir, 'r'), onProgress: (p) => restoreEvents.push(p), progressIntervalMs: 1e9 });
    // Throttled to nothing but the first and the final event.
    expect(restoreEvents.length).toBeLessThanOrEqual(2);
    expect(restoreEvents.at(-1)?.bytesDone).toBe(data.length);
  });
});

describe('dedup and incrementals', () => {
  it('dedups across two images in one store', async () => {
    const { dir, store, storeRoot } = await fresh();
    const keys = generateStoreKeys();
    const shared = await writeImage(path.join(dir, 'a.img'), [['r', 6 * CS]]);
    const b = Buffer.concat([shared.subarray(0, 4 * CS), Buffer.alloc(CS, 9), shared.subarray(5 * CS)]);
    await fsp.writeFile(path.join(dir, 'b.img'), b);
    const ra = await backupImage({ store, keys, source: path.join(dir, 'a.img'), chunkSize: CS });
    const rb = await backupImage({ store, keys, source: path.join(dir, 'b.img'), chunkSize: CS });
    expect(ra.stats.chunksNew).toBe(6);
    expect(rb.stats.chunksNew).toBe(1);
    expect(rb.stats.chunksReused).toBe(5);
    expect(await countChunks(storeRoot)).toBe(7);
    await restoreImage({ store, keys, manifest: rb.manifest, target: path.join(dir, 'rb') });
    expect((await fsp.readFile(path.join(dir, 'rb'))).equals(b)).toBe(true);
  });

  it('incremental without a bitmap reads everything and stores only changed chunks', async () => {
    const { dir, store, storeRoot } = await fresh();
    const keys = generateStoreKeys();
    const img = path.join(dir, 'disk.img');
    const data = await writeImage(img, [['r', 32 * CS]]);
    const full = await backupImage({ store, keys, source: img, chunkSize: CS });
    const fh = await fsp.open(img, 'r+');
    for (const c of [3, 17, 30]) await fh.write(Buffer.alloc(100, c), 0, 100, c * CS + 50);
    await fh.close();
    const incr = await backupImage({ store, keys, source: img, chunkSize: CS, previous: full.manifest });
    expect(incr.stats.bytesRead).toBe(data.length);
    expect(incr.stats.chunksNew).toBe(3);
    expect(incr.stats.chunksReused).toBe(29);
    expect(await countChunks(storeRoot)).toBe(35);
    expect(incr.manifest.imageDigest?.equals(imageDigest(await fsp.readFile(img), CS))).toBe(true);
  });

  it('incremental with a valid bitmap reads only dirty chunks', async () => {
    const { dir, store, storeRoot } = await fresh();
    const keys = generateStoreKeys();
    const img = path.join(dir, 'disk.img');
    const CS4 = 4 * CS; // chunks of 4 bitmap blocks
    await writeImage(img, [['r', 10 * CS4], ['z', 2 * CS4], ['r', 1000]]);
    const full = await backupImage({ store, keys, source: img, chunkSize: CS4 });
    const bitmap = new ChangedBlockBitmap(full.manifest.diskSize);
    const fh = await fsp.open(img, 'r+');
    const writes: Array<[number, number]> = [[2 * CS4 + CS + 7, 10], [7 * CS4 + 3 * CS, CS + 1], [10 * CS4 + 5, 3]];
    for (const [off, len] of writes) {
      await fh.write(Buffer.alloc(len, 0xee), 0, len, off);
      bitmap.markWritten(off, len);
    }
    await fh.close();
    const incr = await backupImage({ store, keys, source: img, chunkSize: CS4, previous: full.manifest, bitmap });
    // Chunks 2, 7, 8 (the write spans into 8) and 10 (was a hole) are dirty.
    expect(incr.stats.usedBitmap).toBe(true);
    expect(incr.stats.bytesRead).toBe(4 * CS4);
    expect(incr.stats.chunksNew).toBe(4);
    expect(incr.manifest.imageDigest).toBeUndefined();
    expect(await countChunks(storeRoot)).toBe(full.stats.chunksNew + 4);
    const target = path.join(dir, 'r.img');
    await restoreImage({ store, keys, manifest: incr.manifest, target });
    expect((await fsp.readFile(target)).equals(await fsp.readFile(img))).toBe(true);
    const v = await verifyManifest({ store, keys, manifest: incr.manifest });
    expect(v).toMatchObject({ ok: true, imageDigest: 'absent' });
  });

  it('a bitmap incremental re-reads a clean chunk that vanished from the store', async () => {
    const { dir, store, storeRoot } = await fresh();
    const keys = generateStoreKeys();
    const img = path.join(dir, 'disk.img');
    await writeImage(img, [['r', 8 * CS]]);
    const full = await backupImage({ store, keys, source: img, chunkSize: CS });
    await fsp.rm(await chunkPath(storeRoot, full.manifest.idHex(5)));
    // Workers forced (small bitmap jobs run inline by default).
    const incr = await backupImage({ store, keys, source: img, chunkSize: CS, previous: full.manifest, bitmap: new ChangedBlockBitmap(8 * CS), inlineBelowBytes: 0 });
    expect(incr.stats.bytesRead).toBe(CS);
    expect(incr.stats.chunksNew).toBe(1);
    expect((await verifyManifest({ store, keys, manifest: incr.manifest })).ok).toBe(true);
  });

  it('a bitmap incremental stores its dirty chunks first (sealed in the hashing visit), then touches the clean ones', async () => {
    // The dirty chunks' puts end with an fdatasync each: started first, they run while the clean chunks are touched.
    const { dir, store } = await fresh();
    const keys = generateStoreKeys();
    const img = path.join(dir, 'disk.img');
    await writeImage(img, [['r', 12 * CS]]);
    const full = await backupImage({ store, keys, source: img, chunkSize: CS });
    const bitmap = new ChangedBlockBitmap(12 * CS);
    const fh = await fsp.open(img, 'r+');
    for (const c of [1, 6, 10]) {
      await fh.write(Buffer.alloc(100, c), 0, 100, c * CS + 5);
      bitmap.markWritten(c * CS + 5, 100);
    }
    await fh.close();
    const calls: string[] = [];
    const known = new Map<string, number>();
    for (let i = 0; i < 12; i++) known.set(full.manifest.idHex(i), i);
    const spy = Object.create(store) as FsChunkStore;
    spy.touch = async (id: string) => {
      calls.push(known.has(id) ? `touch ${known.get(id)}` : 'touch new');
      return store.touch(id);
    };
    spy.putIfAbsent = async (id, data, opts) => {
      calls.push('put');
      return store.putIfAbsent(id, data, opts);
    };
    const incr = await backupImage({ store: spy, keys, source: img, chunkSize: CS, previous: full.manifest, bitmap });
    expect(incr.stats.chunksNew).toBe(3);
    // Three puts before any touch, and no separate existence check of a dirty chunk (putIfAbsent is it).
    expect(calls.slice(0, 3)).toEqual(['put', 'put', 'put']);
    expect(calls).not.toContain('touch new');
    expect(calls.filter((c) => c.startsWith('touch')).sort()).toEqual([0, 2, 3, 4, 5, 7, 8, 9, 11].map((i) => `touch ${i}`).sort());
    const target = path.join(dir, 'r.img');
    await restoreImage({ store, keys, manifest: incr.manifest, target });
    expect((await fsp.readFile(target)).equals(await fsp.readFile(img))).toBe(true);
  });

  it('rejects a bitmap of another size', async () => {
    const { dir, store } = await fresh();
    const keys = generateStoreKeys();
    const img = path.join(dir, 'disk.img');
    await writeImage(img, [['r', 2 * CS]]);
    const full = await backupImage({ store, keys, source: img, chunkSize: CS });
    await expect(backupImage({ store, keys, source: img, chunkSize: CS, previous: full.manifest, bitmap: new ChangedBlockBitmap(CS) })).rejects.toMatchObject({
      code: 'InvalidArgument',
    });
  });
});

describe('corruption', () => {
  async function setup(): Promise<{ dir: string; store: FsChunkStore; storeRoot: string; keys: ReturnType<typeof generateStoreKeys>; data: Buffer; manifest: import('./manifest.js').Manifest }> {
    const { dir, store, storeRoot } = await fresh();
    const keys = generateStoreKeys();
    const img = path.join(dir, 'disk.img');
    const data = await writeImage(img, [['r', 3 * CS], ['z', CS], ['r', 3 * CS]]);
    const { manifest } = await backupImage({ store, keys, source: img, chunkSize: CS });
    return { dir, store, storeRoot, keys, data, manifest };
  }

  it('one flipped byte in a stored chunk: verify and restore name the offset; no target appears', async () => {
    const { dir, store, storeRoot, keys, manifest } = await setup();
    const victim = 5;
    const file = await chunkPath(storeRoot, manifest.idHex(victim));
    const bytes = await fsp.readFile(file);
    bytes[1000]! ^= 0x01;
    await fsp.writeFile(file, bytes);
    const v = await verifyManifest({ store, keys, manifest });
    expect(v.ok).toBe(false);
    expect(v.imageDigest).toBe('unverifiable');
    expect(v.problems).toEqual([expect.objectContaining({ code: 'UserErrorChunkCorrupted', chunkIndex: victim, offset: victim * CS })]);
    expect(v.problems[0]?.message).toContain(`offset ${victim * CS}`);
    const target = path.join(dir, 'r.img');
    const err = await restoreImage({ store, keys, manifest, target }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EngineError);
    expect(err).toMatchObject({ code: 'UserErrorChunkCorrupted', details: { offset: victim * CS, chunkIndex: victim } });
    expect((err as Error).message).toContain(`offset ${victim * CS}`);
    await expect(fsp.access(target)).rejects.toThrow();
    await expect(fsp.access(`${target}.partial`)).rejects.toThrow();
    const s = await verifyStore({ store, keys });
    expect(s.ok).toBe(false);
    expect(s.bad.map((b) => b.chunkId)).toEqual([manifest.idHex(victim)]);
  });

  it('a chunk swapped for another valid chunk fails (id is bound as associated data)', async () => {
    const { dir, store, storeRoot, keys, manifest } = await setup();
    const a = await chunkPath(storeRoot, manifest.idHex(0));
    const b = await chunkPath(storeRoot, manifest.idHex(1));
    await fsp.copyFile(b, a);
    const err = await restoreImage({ store, keys, manifest, target: path.join(dir, 'r') }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'UserErrorChunkCorrupted', details: { offset: 0 } });
    const v = await verifyManifest({ store, keys, manifest });
    expect(v.problems.map((p) => p.chunkIndex)).toEqual([0]);
  });

  it('a truncated or extended chunk is reported as corrupted with its offset', async () => {
    const { dir, store, storeRoot, keys, manifest } = await setup();
    const a = await chunkPath(storeRoot, manifest.idHex(1));
    await fsp.truncate(a, 1000);
    const b = await chunkPath(storeRoot, manifest.idHex(4));
    await fsp.appendFile(b, Buffer.alloc(CS * 2));
    const v = await verifyManifest({ store, keys, manifest });
    expect(v.problems.map((p) => [p.code, p.offset])).toEqual([
      ['UserErrorChunkCorrupted', CS],
      ['UserErrorChunkCorrupted', 4 * CS],
    ]);
    await expect(restoreImage({ store, keys, manifest, target: path.join(dir, 'r') })).rejects.toMatchObject({ code: 'UserErrorChunkCorrupted', details: { offset: CS } });
  });

  it('a missing chunk is reported with its offset', async () => {
    const { dir, store, storeRoot, keys, manifest } = await setup();
    await fsp.rm(await chunkPath(storeRoot, manifest.idHex(6)));
    const v = await verifyManifest({ store, keys, manifest });
    expect(v.problems).toEqual([expect.objectContaining({ code: 'UserErrorChunkMissing', offset: 6 * CS })]);
    await expect(restoreImage({ store, keys, manifest, target: path.join(dir, 'r') })).rejects.toMatchObject({ code: 'UserErrorChunkMissing', details: { offset: 6 * CS } });
  });

  it('verify detects an image digest that does not match the chunks', async () => {
    const { store, keys, manifest } = await setup();
    const bad = new (manifest.constructor as typeof import('./manifest.js').Manifest)(manifest.diskSize, manifest.chunkSize, manifest.ids, Buffer.alloc(32, 1), manifest.chunkHash);
    const v = await verifyManifest({ store, keys, manifest: bad });
    expect(v).toMatchObject({ ok: false, imageDigest: 'mismatch', problems: [] });
  });

  it('a restore over an existing target leaves the old target untouched on failure', async () => {
    const { dir, store, storeRoot, keys, manifest } = await setup();
    const target = path.join(dir, 'r.img');
    await fsp.writeFile(target, 'previous content');
    await fsp.rm(await chunkPath(storeRoot, manifest.idHex(2)));
    await expect(restoreImage({ store, keys, manifest, target })).rejects.toThrow(EngineError);
    expect(await fsp.readFile(target, 'utf8')).toBe('previous content');
  });
});
