/**
 * Child process for crash tests (run with `node --import tsx`): does one backup or one GC on a
 * store, commits the manifest, and is killed with SIGKILL at a random moment by the parent.
 * argv: mode(backup|gc) storeRoot keysFile imagePath manifestDir
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { backupImage } from '../backup.js';
import { FsChunkStore } from '../fs-store.js';
import { collectGarbage } from '../gc.js';
import { readManifestFile, writeManifestFile, type Manifest } from '../manifest.js';
import { CryptoPool } from '../pool.js';
import { unwrapStoreKeys } from '../seal.js';

const [mode, storeRoot, keysFile, image, manifestDir] = process.argv.slice(2) as [string, string, string, string, string];
const wrapped = await fsp.readFile(keysFile);
const keys = unwrapStoreKeys(wrapped.subarray(32), wrapped.subarray(0, 32));
const store = await FsChunkStore.open(storeRoot);

async function committed(): Promise<Manifest[]> {
  const names = (await fsp.readdir(manifestDir)).filter((n) => n.endsWith('.manifest')).sort();
  return Promise.all(names.map((n) => readManifestFile(path.join(manifestDir, n))));
}

// One worker (each one loads tsx, which dominates start-up here), started before 'ready' so the
// parent's random kill lands in the actual work.
const pool = new CryptoPool(1);
const sab = new SharedArrayBuffer(16);
await pool.run({ op: 'hash', idKey: keys.idKey, hash: 'blake3', src: { sab, off: 0, len: 16 } });
process.stdout.write('ready\n');
if (mode === 'backup') {
  const prev = (await committed()).at(-1);
  const { manifest } = await backupImage({ store, keys, source: image, chunkSize: 64 * 1024, pool, imageDigest: false, ...(prev ? { previous: prev } : {}) });
  await writeManifestFile(path.join(manifestDir, `${Date.now()}-${process.pid}.manifest`), manifest);
} else {
  await collectGarbage({ store, liveManifests: await committed(), cutoff: new Date(), safetyMarginMs: 0 });
}
process.stdout.write('done\n');
