/**
 * One rsvault step of the benchmark, run in its own process so its wall time and peak RSS are
 * its own. Usage: node step.js '<json StepArgs>'; prints one JSON line (StepResult).
 */
import { promises as fsp } from 'node:fs';
import {
  ChangedBlockBitmap,
  FsChunkStore,
  ObjectChunkStore,
  AzureBlobBackend,
  S3Backend,
  withConcurrencyLimit,
  type ChunkStore,
  backupImage,
  readManifestFile,
  restoreImage,
  writeManifestFile,
  type StoreKeys,
} from '../src/engine/index.js';

export interface StepArgs {
  op: 'backup' | 'restore';
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
    ? withConcurrencyLimit(new ObjectChunkStore(o.kind === 'blob' ? AzureBlobBackend.create(o) : S3Backend.create(o), `${args.storeRoot}/`), 16)
    : await FsChunkStore.open(args.storeRoot, { fsyncObjects: args.op !== 'backup' || (args.fsync ?? true) });
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
  } else {
    if (!args.manifestIn || !args.target) throw new Error('restore needs manifestIn and target');
    const manifest = await readManifestFile(args.manifestIn);
    stats = await restoreImage({ store, keys, manifest, target: args.target, fsync: args.fsync ?? true });
  }
  const result: StepResult = { internalMs: performance.now() - t0, maxRssKiB: process.resourceUsage().maxRSS, stats };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

await main();
