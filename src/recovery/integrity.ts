/**
 * Integrity of recovery points on disk (issue #12 item 5):
 *
 * - Ids: `allocatePointId` reserves an id by creating its manifest directory exclusively (mkdir fails with EEXIST
 *   when taken), so two backups never share a directory; manifests are then created exclusively too (engine
 *   `writeManifestFile({exclusive})`), so a collision is an error, never an overwrite.
 * - Manifests are written as engine format version 2: an HMAC under the vault's manifest key (derived from its store
 *   keys), bound to the recovery point id, the item and the disk (`manifestMac`). A manifest copied from another VM,
 *   moved to another recovery point or rolled back to an older one fails with `UserErrorRecoveryPointTampered`.
 *   The row also records each manifest's MAC (`DiskRecord.mac`), pinning the exact file.
 * - Each recovery point directory holds an `index` file (engine index file, same key, bound to the id): id, item,
 *   VM config, disks → manifest names and MACs, time, expiry, sealed keys. `recatalog` rebuilds rows from them.
 *   Written after the manifests and before the row: a directory with an index is a complete recovery point (GC keeps
 *   its chunks live even without a row). A backup killed between its index and its row leaves such a point behind
 *   (its retried job makes another one); recatalog adds it.
 *
 * Layout: `{data-dir}/vaults/{uid}/manifests/{rpId}/{os|lunN}.manifest` + `index`, written there first (exclusive
 * create is what reserves ids), then copied into the vault's chunk store as metadata objects
 * `manifests/{rpId}/{file}` (backup.ts `mirrorPoint`) before the row commits.
 *
 * Where they are read from (`readPointFile`): the chunk store's metadata object first, the vault directory's file
 * when the store has none. The store is what every node shares (an object store, or the embedded fs store whose
 * metadata directory *is* the vault directory, so nothing changes there): a restore, verify, GC or recatalog on any
 * worker — or after the local `manifests/` directory was lost — reads the same bytes. Integrity does not depend
 * on the source: every file is authenticated (HMAC under the vault's key, bound to the point, item and disk; the row
 * pins each manifest's MAC), so a tampered object fails with `UserErrorRecoveryPointTampered` wherever it was read;
 * a copy that fails authentication is reported, never replaced by the other copy. The local directory is only read
 * when the store lacks the object or cannot be reached (a point written before mirroring existed, a store outage).
 *
 * Whether a point *exists* without a row (GC keeping its chunks, recatalog bringing it back) is the store's call:
 * its index object is mirrored last, after the manifests, so an index in the store is a complete point. A local
 * directory whose index is not in the store is a backup that died before mirroring, or a copy left on one node of a
 * point deleted through another (prune removes the store's copy and only the pruning node's directory): neither is
 * recovered, or its chunks would be missing. With the embedded fs store the two are the same files.
 */
import { mkdir, readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { randomInt } from 'node:crypto';
import { ChunkStoreError, EngineError, bindingOf, decodeIndexFile, decodeManifest, manifestKeyOf, writeIndexFile, type ChunkStore, type MacContext, type Manifest, type StoreKeys } from '../engine/index.js';
import { RecoveryError } from './errors.js';

export const INDEX_FILE = 'index';

/** Where the id's clock and randomness come from (injected by tests to force collisions). */
export interface IdSource {
  now(): number;
  /** A random integer in [0, max). */
  random(max: number): number;
}

const systemIds: IdSource = { now: () => Date.now(), random: (max) => randomInt(0, max) };
const RANDOM_DIGITS = 10;

/**
 * Reserves a new recovery point id in `manifestsDir`: `{epoch ms}{10 random digits}` (numeric, as Azure's), its
 * directory created with a non-recursive mkdir — atomic and exclusive, so an id taken by a concurrent backup (same
 * millisecond, same random) is detected and another is drawn. Never returns an id whose directory existed.
 */
export async function allocatePointId(manifestsDir: string, ids: IdSource = systemIds, attempts = 8): Promise<{ id: string; dir: string }> {
  await mkdir(manifestsDir, { recursive: true, mode: 0o700 });
  for (let i = 0; i < attempts; i++) {
    const id = `${ids.now()}${String(ids.random(10 ** RANDOM_DIGITS)).padStart(RANDOM_DIGITS, '0')}`;
    const dir = path.join(manifestsDir, id);
    try {
      await mkdir(dir, { mode: 0o700 });
      return { id, dir };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
  throw new RecoveryError(500, 'RecoveryPointIdConflict', `Could not reserve a unique recovery point id after ${attempts} attempts; nothing was overwritten. Retry the backup.`);
}

/** The disk slot of a manifest: `os` or `lun{N}`. */
export const diskSlot = (d: { os: boolean; lun?: number | undefined }): string => (d.os ? 'os' : `lun${d.lun}`);

/** The MAC context of one disk's manifest: bound to the recovery point, the item and the disk. */
export function manifestMac(keys: StoreKeys, rpId: string, itemNorm: string, disk: { os: boolean; lun?: number | undefined; diskId: string }): MacContext {
  return { key: manifestKeyOf(keys), binding: bindingOf([['kind', 'manifest'], ['rp', rpId], ['item', itemNorm.toLowerCase()], ['disk', diskSlot(disk)], ['diskId', disk.diskId.toLowerCase()]]) };
}

export function indexMac(keys: StoreKeys, rpId: string): MacContext {
  return { key: manifestKeyOf(keys), binding: bindingOf([['kind', 'index'], ['rp', rpId]]) };
}

export const tampered = (rpId: string, what: string, detail: string) =>
  new RecoveryError(400, 'UserErrorRecoveryPointTampered', `The recovery point '${rpId}' failed its integrity check: ${what} ${detail}. Nothing was restored from it.`, {
    recommendation: 'Restore another recovery point (rsvault backup recoverypoint list), and run rsvault backup vault verify to find every affected one; check who can write the vault directory.',
  });

/** Where a vault's recovery point files are: its chunk store (metadata objects) and its local directory. */
export interface PointSource {
  store: Pick<ChunkStore, 'getMeta' | 'listMeta'>;
  /** The vault's directory (`{data-dir}/vaults/{uid}`). */
  dir: string;
}

/**
 * The bytes of file `file` of recovery point `rpId`: the store's metadata object `manifests/{rpId}/{file}`, else the
 * local file. Missing from both: the local read's ENOENT error (callers treat it as "missing").
 */
export async function readPointFile(src: PointSource, rpId: string, file: string, o: { local?: boolean } = {}): Promise<Buffer> {
  let storeErr: unknown;
  try {
    return await src.store.getMeta(`manifests/${rpId}/${file}`);
  } catch (e) {
    if (!(e instanceof ChunkStoreError) || o.local === false) throw e;
    storeErr = e;
  }
  try {
    return await readFile(path.join(src.dir, 'manifests', rpId, file));
  } catch (e) {
    // Missing locally too: a store that could not answer is the better explanation than "missing".
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' && storeErr instanceof ChunkStoreError && storeErr.kind !== 'NotFound') throw storeErr;
    throw e;
  }
}

/** Ids of the recovery point directories of a vault: the store's `manifests/{id}/…` objects and the local directories. */
export async function listPointDirs(src: PointSource): Promise<string[]> {
  const ids = new Set<string>();
  for (const e of await readdir(path.join(src.dir, 'manifests'), { withFileTypes: true }).catch(() => [])) if (e.isDirectory()) ids.add(e.name);
  for await (const name of src.store.listMeta('manifests/')) {
    const id = name.split('/')[1];
    if (id) ids.add(id);
  }
  return [...ids].sort();
}

/**
 * Reads a disk's manifest of a recovery point and authenticates it (version 2) against the point, item and disk, and
 * the MAC recorded in the row (when the row has one). Version-1 manifests (written before authentication) are read
 * with `authenticated: false`. Failures: `UserErrorRecoveryPointTampered`.
 */
export async function readPointManifest(src: PointSource, keys: StoreKeys, rp: { id: string; item_norm: string }, d: { os: boolean; lun?: number | undefined; diskId: string; name: string; manifest: string; mac?: string | undefined }): Promise<Manifest> {
  let m: Manifest;
  try {
    m = decodeManifest(await readPointFile(src, rp.id, d.manifest), manifestMac(keys, rp.id, rp.item_norm, d));
  } catch (e) {
    if (e instanceof EngineError && e.code === 'ManifestAuthenticationFailed') throw tampered(rp.id, `the manifest of disk '${d.name}' (${d.manifest})`, 'does not authenticate: it was changed, swapped with another VM\'s or disk\'s, or copied from another recovery point');
    if (e instanceof EngineError && e.code === 'ManifestCorrupted') throw tampered(rp.id, `the manifest of disk '${d.name}' (${d.manifest})`, `is damaged (${e.message})`);
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw tampered(rp.id, `the manifest of disk '${d.name}' (${d.manifest})`, 'is missing');
    throw e;
  }
  if (d.mac && (!m.trailer || m.trailer.toString('hex') !== d.mac)) throw tampered(rp.id, `the manifest of disk '${d.name}' (${d.manifest})`, 'is not the one this recovery point recorded (an older or replaced file)');
  if (d.mac && !m.authenticated) throw tampered(rp.id, `the manifest of disk '${d.name}' (${d.manifest})`, 'was replaced by an unauthenticated (version 1) file');
  return m;
}

/** What a recovery point's index file holds (JSON; `keysSealed` is sealed with the installation master key). */
export interface PointIndex {
  format: 1;
  recoveryPointId: string;
  vault: string;
  item: { idNorm: string; vmId: string; vmRg: string; vmName: string; classic: number };
  jobId: string;
  time: number;
  expiry: number;
  rule: string;
  rpType: string;
  encrypted: number;
  encryptionMechanism: string;
  keysSealed: string | null;
  sizeBytes: number;
  vm: unknown;
  disks: Array<{ diskId: string; name: string; lun?: number | undefined; os: boolean; sizeBytes: number; manifest: string; chunkSize: number; mac?: string | undefined }>;
}

export async function writePointIndex(rpDir: string, keys: StoreKeys, index: PointIndex): Promise<void> {
  await writeIndexFile(path.join(rpDir, INDEX_FILE), index, indexMac(keys, index.recoveryPointId));
}

/**
 * A point's authenticated index. `{ local: false }`: the store's copy only (a NotFound ChunkStoreError when it has
 * none) — what decides whether a point without a row exists.
 */
export async function readPointIndex(src: PointSource, keys: StoreKeys, rpId: string, o: { local?: boolean } = {}): Promise<PointIndex> {
  const idx = decodeIndexFile<PointIndex>(await readPointFile(src, rpId, INDEX_FILE, o), indexMac(keys, rpId));
  if (idx.recoveryPointId !== rpId || idx.format !== 1 || !Array.isArray(idx.disks)) throw new EngineError('ManifestAuthenticationFailed', `index of ${rpId} names another recovery point or has an unknown format`);
  return idx;
}
