/**
 * One rsvault step of the benchmark, run in its own process so its wall time and peak RSS are
 * its own. Usage: node step.js '<json StepArgs>'; prints one JSON line (StepResult).
 */
import { randomFillSync } from 'node:crypto';
import { promises as fsp } from 'node:fs';
// Only the modules a step uses, not the engine's index: the index also loads the Azure and AWS SDKs
// (≈ 0.3–0.5 s of CPU at start-up on the reference VM, inside every fs step's wall time). The object
// stores are imported only when a step uses one.
import { ChangedBlockBitmap } from '../src/engine/bitmap.js';
import { CryptoPool, InlineCrypto, type CryptoRunner } from '../src/engine/pool.js';
import { FsChunkStore } from '../src/engine/fs-store.js';
import { withConcurrencyLimit } from '../src/engine/store-wrappers.js';
import type { ChunkStore } from '../src/engine/store.js';
import { backupImage } from '../src/engine/backup.js';
import { readManifestFile, writeManifestFile } from '../src/engine/manifest.js';
import { restoreImage } from '../src/engine/restore.js';
import type { StoreKeys } from '../src/engine/seal.js';

export interface StepArgs {
  /**
   * backup / restore: one job. serverIncr: a full backup of `image` then, in the same process (a
   * running server's situation: workers started, code warm), the bitmap incremental of `image2`;
   * only the incremental is timed. cpu: hash + seal `cpuBytes` in memory (no I/O) on one thread
   * and on all cores — the machine's CPU limit for a full backup.
   */
  op: 'backup' | 'restore' | 'serverIncr' | 'cpu';
  image2?: string;
  manifestOut2?: string;
  cpuBytes?: number;
  storeRoot: string;
  idKeyHex: string;
  sealKeyHex: string;
  /** Chunk hash of the store (default blake3, as new stores). */
  chunkHash?: 'sha256' | 'blake3';
  image?: string;
  chunkSize?: number;
  previous?: string;
  bitmapFile?: string;
  imageDigest?: boolean;
  manifestOut?: string;
  manifestIn?: string;
  target?: string;
  fsync?: boolean;
  /** Write with O_DIRECT when possible (FsChunkStore / restore `directIO`; default true, with or without fsync). */
  directIO?: boolean;
  /** Use an object store instead of the fs store at storeRoot (storeRoot is then the key prefix). */
  objectStore?: { kind: 'blob'; url: string; accountKey: string; container: string } | { kind: 's3'; endpoint: string; bucket: string; accessKeyId: string; secretAccessKey: string };
}

export interface StepResult {
  /** In-process time in ms (store open → manifest committed / target fsynced and renamed). */
  internalMs: number;
  maxRssKiB: number;
  stats: unknown;
}

async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2] ?? '{}') as StepArgs;
  const keys: StoreKeys = { idKey: Buffer.from(args.idKeyHex, 'hex'), sealKey: Buffer.from(args.sealKeyHex, 'hex'), chunkHash: args.chunkHash ?? 'blake3' };
  // In-process time: from opening the store to the committed manifest (or the fsynced target):
  // what a long-running server pays per job, without Node start-up and module loading.
  const t0 = performance.now();
  // fsync: false on a backup = no per-chunk fdatasync (a CPU-path figure to set beside cp without sync).
  const o = args.objectStore;
  const store: ChunkStore = o
    ? withConcurrencyLimit(await openObjectStore(o, `${args.storeRoot}/`), 16)
    : await FsChunkStore.open(args.storeRoot, {
        fsyncObjects: args.op !== 'backup' || (args.fsync ?? true),
        ...(args.directIO !== undefined ? { directIO: args.directIO } : {}),
      });
  let stats: unknown;
  if (args.op === 'backup') {
    if (!args.image || !args.manifestOut) throw new Error('backup needs image and manifestOut');
    const previous = args.previous ? await readManifestFile(args.previous) : undefined;
    let bitmap: ChangedBlockBitmap | undefined;
    if (args.bitmapFile) {
      const size = (await fsp.stat(args.image)).size;
      bitmap = ChangedBlockBitmap.fromBytes(size, await fsp.readFile(args.bitmapFile));
    }
    const r = await backupImage({
      store,
      keys,
      source: args.image,
      ...(args.chunkSize ? { chunkSize: args.chunkSize } : {}),
      ...(previous ? { previous } : {}),
      ...(bitmap ? { bitmap } : {}),
      imageDigest: args.imageDigest ?? true,
    });
    await writeManifestFile(args.manifestOut, r.manifest);
    stats = r.stats;
  } else if (args.op === 'serverIncr') {
    if (!args.image || !args.image2 || !args.bitmapFile || !args.manifestOut || !args.manifestOut2) throw new Error('serverIncr needs image, image2, bitmapFile, manifestOut, manifestOut2');
    const full = await backupImage({ store, keys, source: args.image, ...(args.chunkSize ? { chunkSize: args.chunkSize } : {}) });
    await writeManifestFile(args.manifestOut, full.manifest);
    const fullMs = performance.now() - t0;
    const size = (await fsp.stat(args.image2)).size;
    // The job a server runs: read the bitmap, back up the dirty chunks, commit the manifest.
    const t1 = performance.now();
    const bitmap = ChangedBlockBitmap.fromBytes(size, await fsp.readFile(args.bitmapFile));
    const r = await backupImage({ store, keys, source: args.image2, previous: full.manifest, bitmap });
    await writeManifestFile(args.manifestOut2, r.manifest);
    const incrMs = performance.now() - t1;
    stats = { fullMs, incrMs, incr: r.stats };
  } else if (args.op === 'cpu') {
    // measured below, after the store branch (no store work)
  } else {
    if (!args.manifestIn || !args.target) throw new Error('restore needs manifestIn and target');
    const manifest = await readManifestFile(args.manifestIn);
    stats = await restoreImage({ store, keys, manifest, target: args.target, fsync: args.fsync ?? true, ...(args.directIO !== undefined ? { directIO: args.directIO } : {}) });
  }
  if (args.op === 'cpu') stats = await cpuLimits(keys, args.chunkSize ?? 4 * 1024 * 1024, args.cpuBytes ?? 1024 * 1024 * 1024);
  const result: StepResult = { internalMs: performance.now() - t0, maxRssKiB: process.resourceUsage().maxRSS, stats };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

async function openObjectStore(o: NonNullable<StepArgs['objectStore']>, prefix: string): Promise<ChunkStore> {
  const { ObjectChunkStore } = await import('../src/engine/object-store.js');
  if (o.kind === 'blob') {
    const { AzureBlobBackend } = await import('../src/engine/azure-blob-store.js');
    return new ObjectChunkStore(AzureBlobBackend.create(o), prefix);
  }
  const { S3Backend } = await import('../src/engine/s3-store.js');
  return new ObjectChunkStore(S3Backend.create(o), prefix);
}

/**
 * Hash + seal throughput in memory: what the CPU allows a full backup (no reads, no writes). One
 * thread (inline) and all cores (the engine's worker pool, as many requests in flight as a backup).
 */
async function cpuLimits(keys: StoreKeys, chunkSize: number, bytes: number): Promise<{ oneThreadGBps: number; allCoresGBps: number; workers: number }> {
  const slots = 8;
  const src = new SharedArrayBuffer(slots * chunkSize);
  randomFillSync(new Uint8Array(src));
  const count = Math.max(slots, Math.round(bytes / chunkSize));
  const runAll = async (pool: CryptoRunner, inFlight: number): Promise<number> => {
    const outs = Array.from({ length: inFlight }, () => new ArrayBuffer(chunkSize + 64));
    let next = 0;
    const t = performance.now();
    await Promise.all(
      outs.map(async (_, k) => {
        let out = outs[k] as ArrayBuffer;
        for (let i = next++; i < count; i = next++) {
          const r = await pool.run({ op: 'hash', idKey: keys.idKey, hash: keys.chunkHash ?? 'blake3', sealKey: keys.sealKey, src: { sab: src, off: (i % slots) * chunkSize, len: chunkSize }, dst: { sab: out, off: 0, len: chunkSize + 36 } });
          if (r.out) out = r.out;
        }
      }),
    );
    return (count * chunkSize) / ((performance.now() - t) / 1000) / 1e9;
  };
  const oneThreadGBps = await runAll(new InlineCrypto(), 1);
  const pool = new CryptoPool();
  await runAll(pool, pool.size * 2); // start the workers (not timed)
  const allCoresGBps = await runAll(pool, pool.size * 2);
  await pool.close();
  return { oneThreadGBps, allCoresGBps, workers: pool.size };
}

await main();
