/**
 * Restore, verify and recatalog from the object store alone (issue #14). A vault's manifests and index files are
 * written to its local directory (`<data-dir>/vaults/<uid>/manifests/`) and copied into its chunk store; readers take
 * the store's copy (integrity.ts `readPointFile`), so a worker that never held the local files, or an installation
 * that lost them, still restores. Against the real server with Azure Blob (Azurite) as the primary store and S3
 * (s3rver) as the GeoRedundant secondary:
 * - the local `manifests/` directory deleted and the recovery point rows deleted from the database: recatalog brings
 *   the rows back from the store's index files; a restore is byte-identical; verify completes with every chunk checked;
 * - a manifest object in the store replaced by another VM's: the restore fails with UserErrorRecoveryPointTampered
 *   (the HMAC, not the source, decides) and verify reports it;
 * - a point deleted through another node (its row and store objects gone, this node's local directory left): the
 *   store decides, recatalog does not bring it back;
 * - a GeoRedundant vault whose objects in the primary (Azurite) are deleted and whose local manifests are gone: the
 *   restore reads manifests and chunks from the secondary (S3), byte-identical.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { AzureBlobBackend } from '../src/engine/azure-blob-store.js';
import { AZURITE_KEY, S3RVER_KEY_ID, S3RVER_SECRET, startAzurite, startS3rver, type LocalServer } from '../src/engine/testdata/object-servers.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { Fixture, BK_API, MiB, RS_API, env, type Job } from './recovery-fixture.js';
import { cli, get } from './restore-helpers.js';

const bk = { 'api-version': BK_API };
const ST = { 'api-version': '2023-01-01' };
const RG = 'rg-osr';
const SA = 'stgrsosr';
const CONTAINER = 'rsvault-osr';

let azurite: LocalServer;
let s3rver: LocalServer;
let s: TestServer;
let f: Fixture;
let dataDir: string;
let blob: AzureBlobBackend;
let cliEnv: Record<string, string>;

beforeAll(async () => {
  [azurite, s3rver] = await Promise.all([startAzurite(), startS3rver()]);
  dataDir = mkdtempSync(path.join(os.tmpdir(), 'rsv-osr-'));
  s = await startTestServer({
    dataDir,
    env: {
      ...env,
      RSVAULT_CHUNK_STORE: 'blob', RSVAULT_BLOB_URL: azurite.url, RSVAULT_BLOB_CONTAINER: CONTAINER, RSVAULT_BLOB_ACCOUNT_KEY: AZURITE_KEY,
      RSVAULT_SECONDARY_CHUNK_STORE: 's3', RSVAULT_SECONDARY_S3_ENDPOINT: s3rver.url, RSVAULT_SECONDARY_S3_BUCKET: 'rsvault-osr-secondary',
      RSVAULT_SECONDARY_S3_ACCESS_KEY_ID: S3RVER_KEY_ID, RSVAULT_SECONDARY_S3_SECRET_ACCESS_KEY: S3RVER_SECRET,
    },
  });
  f = new Fixture(s, RG);
  await f.group();
  await s.client.request('PUT', `${f.rgPath()}/providers/Microsoft.Storage/storageAccounts/${SA}`, { query: ST, body: { location: 'local', sku: { name: 'Standard_LRS' }, kind: 'StorageV2' } });
  blob = AzureBlobBackend.create({ url: azurite.url, accountKey: AZURITE_KEY, container: CONTAINER });
  cliEnv = { RSVAULT_CONFIG_DIR: path.join(f.tmp, 'cfg') };
  const login = await cli(cliEnv, 'login', '--server', s.origin, '--service-principal', '-u', s.creds.clientId, '-p', s.creds.clientSecret, '--tenant', s.creds.tenantId, '--ca-file', s.creds.caPath);
  expect(login.code, login.stderr).toBe(0);
}, 90_000);

afterAll(async () => {
  await s?.stop();
  if (f) rmSync(f.tmp, { recursive: true, force: true });
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  await Promise.all([azurite?.stop(), s3rver?.stop()]);
});

async function protectAndBackup(vault: string, vm: string): Promise<string> {
  expect((await f.opStatus(await f.enable(vault, vm))).status).toBe('Succeeded');
  const job = await f.waitJob(vault, (await f.opStatus(await f.backup(vault, vm))).properties!.jobId);
  expect(job.properties.status, JSON.stringify(job.properties.errorDetails)).toBe('Completed');
  return job.properties.extendedInfo.propertyBag['Recovery Point Id']!;
}

/** Restores the OS disk of `rpId` to the storage account; the job, and the disk's bytes when it completed. */
async function restore(vault: string, vm: string, rpId: string): Promise<{ job: Job; disk?: Buffer }> {
  const res = await s.client.send('POST', `${f.itemPath(vault, vm)}/recoveryPoints/${rpId}/restore`, {
    query: bk,
    body: { properties: { objectType: 'IaasVMRestoreRequest', recoveryPointId: rpId, sourceResourceId: f.vmId(vm), recoveryType: 'RestoreDisks', storageAccountId: `${f.rgPath()}/providers/Microsoft.Storage/storageAccounts/${SA}` } },
  });
  expect(res.status, JSON.stringify(res.body)).toBe(202);
  const job: Job = await f.waitJob(vault, (await f.opStatus(res)).properties!.jobId);
  if (job.properties.status !== 'Completed') return { job };
  const uri = job.properties.extendedInfo.propertyBag['OS Disk Blob Uri']!;
  const sas = await s.client.request<{ serviceSasToken: string }>('POST', `${f.rgPath()}/providers/Microsoft.Storage/storageAccounts/${SA}/listServiceSas`, {
    query: ST,
    body: { canonicalizedResource: `/blob/${SA}${new URL(uri).pathname}`, signedResource: 'b', signedPermission: 'r', signedExpiry: new Date(Date.now() + 600_000).toISOString() },
  });
  const disk = await get(s, `${uri}?${sas.serviceSasToken}`);
  expect(disk.status).toBe(200);
  return { job, disk: disk.body };
}

async function verify(vault: string): Promise<Job> {
  const res = await s.client.send('POST', `${f.vaultPath(vault)}/verify`, { query: bk });
  expect(res.status, JSON.stringify(res.body)).toBe(202);
  return f.waitJob(vault, (await f.opStatus(res)).properties!.jobId, 90_000);
}

async function uidOf(vault: string): Promise<string> {
  const db = new Database(path.join(dataDir, 'rsvault.db'), { readonly: true });
  try {
    db.pragma('busy_timeout = 5000');
    return (db.prepare('SELECT uid FROM recovery_vaults WHERE name = ?').get(vault) as { uid: string }).uid;
  } finally {
    db.close();
  }
}

/** Keys of the vault's objects in the primary container (Azurite). */
async function primaryKeys(uid: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const k of blob.list(`vaults/${uid}/`)) keys.push(k);
  return keys;
}

describe('restore, verify and recatalog from the object store alone', () => {
  const RSV = 'rsvosr';

  it('local manifests deleted and rows deleted: recatalog rebuilds the rows from the store; the restore is byte-identical; verify completes', async () => {
    await f.createVault(RSV);
    await s.client.request('PUT', `${f.vaultPath(RSV)}/backupstorageconfig/vaultstorageconfig`, { query: { 'api-version': RS_API }, body: { properties: { storageType: 'LocallyRedundant' } } });
    await f.vm('vmosa', 4 * MiB);
    await f.vm('vmosb', 4 * MiB);
    const rpA = await protectAndBackup(RSV, 'vmosa');
    const rpB = await protectAndBackup(RSV, 'vmosb');
    const uid = await uidOf(RSV);
    const keys = await primaryKeys(uid);
    expect(keys).toContain(`vaults/${uid}/meta/manifests/${rpA}/os.manifest`);
    expect(keys).toContain(`vaults/${uid}/meta/manifests/${rpA}/index`);

    // The node's local copies are gone...
    const local = path.join(dataDir, 'vaults', uid, 'manifests');
    expect(readdirSync(local).sort()).toEqual([rpA, rpB].sort());
    rmSync(local, { recursive: true, force: true });
    // ...and so are the database rows.
    const db = new Database(path.join(dataDir, 'rsvault.db'));
    try {
      db.pragma('busy_timeout = 5000');
      expect(db.prepare('DELETE FROM recovery_points WHERE vault_norm LIKE ?').run(`%/vaults/${RSV}`).changes).toBe(2);
    } finally {
      db.close();
    }

    const r = await cli(cliEnv, 'backup', 'vault', 'recatalog', '-g', RG, '-n', RSV);
    expect(r.code, r.stderr).toBe(0);
    const rep = r.json as { recovered: { recoveryPointId: string }[]; skipped: unknown[] };
    expect(rep.recovered.map((x) => x.recoveryPointId).sort()).toEqual([rpA, rpB].sort());
    expect(rep.skipped).toEqual([]);
    expect(existsSync(local) ? readdirSync(local) : []).toEqual([]); // nothing came back locally: read from the store

    const { job, disk } = await restore(RSV, 'vmosa', rpA);
    expect(job.properties.status, JSON.stringify(job.properties.errorDetails)).toBe('Completed');
    expect(disk!.equals(readFileSync(path.join(f.tmp, 'vmosa.raw')))).toBe(true);

    const v = await verify(RSV);
    expect(v.properties.status, JSON.stringify(v.properties.errorDetails)).toBe('Completed');
    expect(v.properties.extendedInfo.propertyBag).toMatchObject({ 'Recovery Points Checked': '2', 'Disks Checked': '2', 'Tampered Manifests': '0', 'Damaged Disks': '0' });
    expect(Number(v.properties.extendedInfo.propertyBag['Chunks Checked'])).toBeGreaterThan(0);
  }, 120_000);

  it("a manifest object in the store replaced by another VM's: the restore fails with UserErrorRecoveryPointTampered, verify reports it", async () => {
    const uid = await uidOf(RSV);
    const rps = async (vm: string) => (await s.client.list<{ name: string }>(`${f.itemPath(RSV, vm)}/recoveryPoints`, { query: bk })).map((p) => p.name);
    const [rpA] = await rps('vmosa');
    const [rpB] = await rps('vmosb');
    await blob.put(`vaults/${uid}/meta/manifests/${rpA}/os.manifest`, await blob.get(`vaults/${uid}/meta/manifests/${rpB}/os.manifest`));
    const { job } = await restore(RSV, 'vmosa', rpA!);
    expect(job.properties.status).toBe('Failed');
    expect(job.properties.errorDetails[0]).toMatchObject({ errorTitle: 'UserErrorRecoveryPointTampered' });
    const v = await verify(RSV);
    expect(v.properties.status).toBe('Failed');
    expect(v.properties.extendedInfo.propertyBag['Tampered Manifests']).toBe('1');
    expect(v.properties.errorDetails[0]?.errorString).toContain(rpA!);
  }, 90_000);

  it('a recovery point deleted through another node (rows and store objects gone) is not recatalogued from the stale local copy on this one', async () => {
    await f.vm('vmosc', 4 * MiB);
    const rpC = await protectAndBackup(RSV, 'vmosc');
    const uid = await uidOf(RSV);
    expect(existsSync(path.join(dataDir, 'vaults', uid, 'manifests', rpC, 'index'))).toBe(true);
    // What removing the point does on another node: its row and its objects in the store go; this node's directory stays.
    const db = new Database(path.join(dataDir, 'rsvault.db'));
    try {
      db.pragma('busy_timeout = 5000');
      expect(db.prepare('DELETE FROM recovery_points WHERE id = ?').run(rpC).changes).toBe(1);
      db.prepare('UPDATE recovery_items SET last_rp_id = NULL WHERE last_rp_id = ?').run(rpC);
    } finally {
      db.close();
    }
    for (const k of await primaryKeys(uid)) if (k.includes(`/meta/manifests/${rpC}/`)) await blob.delete(k);
    const r = await cli(cliEnv, 'backup', 'vault', 'recatalog', '-g', RG, '-n', RSV);
    expect(r.code, r.stderr).toBe(0);
    const rep = r.json as { recovered: { recoveryPointId: string }[]; skipped: { name: string; reason: string }[] };
    expect(rep.recovered).toEqual([]);
    expect(rep.skipped).toEqual([{ name: rpC, reason: expect.stringMatching(/no index file in the vault's chunk store/) }]);
    expect(await s.client.list(`${f.itemPath(RSV, 'vmosc')}/recoveryPoints`, { query: bk })).toEqual([]);
  }, 90_000);

  it("GeoRedundant vault: the vault's objects deleted from the primary (Azurite) and its local manifests gone: the restore reads the secondary (S3), byte-identical", async () => {
    await f.createVault('rsvosrgrs'); // GeoRedundant by default
    await f.vm('vmosg', 4 * MiB);
    const rp = await protectAndBackup('rsvosrgrs', 'vmosg');
    const uid = await uidOf('rsvosrgrs');
    const keys = await primaryKeys(uid);
    expect(keys.filter((k) => /\/chunks\/[0-9a-f]{64}$/.test(k)).length).toBeGreaterThan(0);
    for (const k of keys) await blob.delete(k);
    expect(await primaryKeys(uid)).toEqual([]);
    rmSync(path.join(dataDir, 'vaults', uid, 'manifests'), { recursive: true, force: true });
    const { job, disk } = await restore('rsvosrgrs', 'vmosg', rp);
    expect(job.properties.status, JSON.stringify(job.properties.errorDetails)).toBe('Completed');
    expect(disk!.equals(readFileSync(path.join(f.tmp, 'vmosg.raw')))).toBe(true);
  }, 90_000);
});
