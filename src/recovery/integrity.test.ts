/**
 * Recovery point ids and manifests never collide into an overwrite: the clock and the randomness are forced to repeat,
 * and the second backup either gets another id or fails, while the first one's files stay as they were.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { EngineError, Manifest, generateStoreKeys, writeManifestFile } from '../engine/index.js';
import { allocatePointId, manifestMac, readPointManifest, type IdSource } from './integrity.js';
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
    const back = await readPointManifest(vaultDir, keys, { id, item_norm: 'v|vm-a' }, { ...diskA, mac: mac.toString('hex') });
    expect(Buffer.from(back.ids).equals(Buffer.from(ids))).toBe(true);
    expect(back.authenticated).toBe(true);
    // Read as VM B's (a manifest copied over another VM's), or under another recovery point: tampered.
    await expect(readPointManifest(vaultDir, keys, { id, item_norm: 'v|vm-b' }, diskB)).rejects.toMatchObject({ code: 'UserErrorRecoveryPointTampered' });
  });
});
