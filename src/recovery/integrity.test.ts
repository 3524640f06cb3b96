/**
 * Recovery point ids and manifests never collide into an overwrite: the clock and the randomness are forced to repeat,
 * and the second backup either gets another id or fails, while the first one's files stay as they were.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { EngineError, FsChunkStore, Manifest, encodeManifest, generateStoreKeys, writeManifestFile } from '../engine/index.js';
import { allocatePointId, listPointDirs, manifestMac, readPointIndex, readPointManifest, writePointIndex, type IdSource, type PointIndex } from './integrity.js';
import { RecoveryError } from './errors.js';

const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(path.join(os.tmpdir(), 'rsv-rpid-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A clock stuck at one millisecond and a random source replaying `values`. */
const forced = (values: number[]): IdSource => {
  let i = 0;
  return { now: () => 1_733_300_000_000, random: () => values[Math.min(i++, values.length - 1)]! };
};

describe('recovery point id allocation', () => {
  it('two backups in the same millisecond with the same random draw get different ids: the second one redraws', async () => {
    const dir = tmp();
    const a = await allocatePointId(dir, forced([42]));
    const b = await allocatePointId(dir, forced([42, 42, 7]));
    expect(a.id).toBe('17333000000000000000042');
    expect(b.id).toBe('17333000000000000000007');
    expect(readdirSync(dir).sort()).toEqual([a.id, b.id].sort());
  });

  it('when every draw collides the allocation fails (RecoveryPointIdConflict) instead of sharing the directory', async () => {
    const dir = tmp();
    await allocatePointId(dir, forced([5]));
    const err = await allocatePointId(dir, forced([5]), 4).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(RecoveryError);
    expect((err as RecoveryError).code).toBe('RecoveryPointIdConflict');
  });

  it('ids carry 10 random digits after the millisecond (numeric, as Azure recovery point names)', async () => {
    const { id } = await allocatePointId(tmp());
    expect(id).toMatch(/^\d{23}$/);
  });
});

describe('manifest of a recovery point: exclusive, authenticated, bound', () => {
  it('a second manifest for the same point and disk cannot overwrite the first; a swapped one fails as tampered', async () => {
    const vaultDir = tmp();
    const keys = generateStoreKeys();
    const src = { store: await FsChunkStore.open(path.join(vaultDir, 'store'), { metaDir: vaultDir }), dir: vaultDir }; // the embedded layout
    const { id, dir } = await allocatePointId(path.join(vaultDir, 'manifests'), forced([1]));
    const ids = new Uint8Array(2 * 32).fill(9);
    const mA = new Manifest(2 * 65536, 65536, ids, undefined);
    const diskA = { os: true, diskId: '/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/a-os', name: 'a-os', manifest: 'os.manifest' };
    const mac = await writeManifestFile(path.join(dir, 'os.manifest'), mA, { mac: manifestMac(keys, id, 'v|vm-a', diskA), exclusive: true });
    // Another backup (VM B) that drew the same id would write the same file name: refused, the first stays.
    const mB = new Manifest(2 * 65536, 65536, new Uint8Array(2 * 32).fill(3), undefined);
    const diskB = { ...diskA, diskId: diskA.diskId.replace('a-os', 'b-os'), name: 'b-os' };
    const err = await writeManifestFile(path.join(dir, 'os.manifest'), mB, { mac: manifestMac(keys, id, 'v|vm-b', diskB), exclusive: true }).then(() => undefined, (e: unknown) => e);
    expect((err as EngineError).code).toBe('AlreadyExists');
    const back = await readPointManifest(src, keys, { id, item_norm: 'v|vm-a' }, { ...diskA, mac: mac.toString('hex') });
    expect(Buffer.from(back.ids).equals(Buffer.from(ids))).toBe(true);
    expect(back.authenticated).toBe(true);
    // Read as VM B's (a manifest copied over another VM's), or under another recovery point: tampered.
    await expect(readPointManifest(src, keys, { id, item_norm: 'v|vm-b' }, diskB)).rejects.toMatchObject({ code: 'UserErrorRecoveryPointTampered' });
  });
});

describe('recovery point files from the chunk store (another node, or the local directory lost)', () => {
  const disk = { os: true, diskId: '/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/a-os', name: 'a-os', manifest: 'os.manifest' };
  /** A vault whose chunk store keeps its metadata elsewhere (as an object store does) and one point mirrored into it. */
  async function setup() {
    const vaultDir = tmp();
    const store = await FsChunkStore.open(path.join(tmp(), 'store'), { metaDir: tmp() });
    const keys = generateStoreKeys();
    const { id, dir } = await allocatePointId(path.join(vaultDir, 'manifests'), forced([3]));
    const m = new Manifest(2 * 65536, 65536, new Uint8Array(2 * 32).fill(4), undefined);
    const mac = await writeManifestFile(path.join(dir, 'os.manifest'), m, { mac: manifestMac(keys, id, 'v|vm-a', disk), exclusive: true });
    const idx: PointIndex = {
      format: 1, recoveryPointId: id, vault: 'v', item: { idNorm: 'v|vm-a', vmId: 'vm', vmRg: 'rg', vmName: 'vm-a', classic: 0 }, jobId: 'j', time: 1, expiry: 2, rule: 'OnDemand',
      rpType: 'CrashConsistent', encrypted: 0, encryptionMechanism: 'None', keysSealed: null, sizeBytes: 0, vm: {}, disks: [{ ...disk, sizeBytes: 2 * 65536, chunkSize: 65536, mac: mac.toString('hex') }],
    };
    await writePointIndex(dir, keys, idx);
    for (const f of readdirSync(dir)) await store.putMeta(`manifests/${id}/${f}`, await readFile(path.join(dir, f)));
    return { vaultDir, store, keys, id, m, mac, src: { store, dir: vaultDir } };
  }

  it('the local manifests directory deleted: the manifest and the index are read from the store, and listed', async () => {
    const { vaultDir, keys, id, m, mac, src } = await setup();
    await rm(path.join(vaultDir, 'manifests'), { recursive: true });
    const back = await readPointManifest(src, keys, { id, item_norm: 'v|vm-a' }, { ...disk, mac: mac.toString('hex') });
    expect(Buffer.from(back.ids).equals(Buffer.from(m.ids))).toBe(true);
    expect((await readPointIndex(src, keys, id)).recoveryPointId).toBe(id);
    expect(await listPointDirs(src)).toEqual([id]);
  });

  it('a tampered store object fails as tampered even when a sound local copy exists; missing from both: "is missing"', async () => {
    const { keys, id, store, src } = await setup();
    // Another point's manifest (same key, other binding) put in place of this one: does not authenticate.
    const other = encodeManifest(new Manifest(2 * 65536, 65536, new Uint8Array(2 * 32).fill(8), undefined), manifestMac(keys, '999', 'v|vm-a', disk));
    await store.putMeta(`manifests/${id}/os.manifest`, other);
    await expect(readPointManifest(src, keys, { id, item_norm: 'v|vm-a' }, disk)).rejects.toMatchObject({ code: 'UserErrorRecoveryPointTampered', message: expect.stringMatching(/does not authenticate/) });
    await store.putMeta(`manifests/${id}/index`, Buffer.from('not an index'));
    await expect(readPointIndex(src, keys, id)).rejects.toMatchObject({ code: 'ManifestCorrupted' });
    await store.deleteMeta(`manifests/${id}/os.manifest`);
    await rm(path.join(src.dir, 'manifests', id, 'os.manifest'));
    await expect(readPointManifest(src, keys, { id, item_norm: 'v|vm-a' }, disk)).rejects.toMatchObject({ code: 'UserErrorRecoveryPointTampered', message: expect.stringMatching(/is missing/) });
  });
});
