/**
 * Vault chunk stores chosen by the server configuration, against the real server: Azure Blob (Azurite, started
 * here) as the primary store and a file-system secondary for GeoRedundant vaults. A GeoRedundant vault's backup
 * lands in both; with the primary container deleted, the restore reads the secondary and is byte-identical. A
 * LocallyRedundant vault writes only the primary. Then `rsvault admin copy-store` moves the installation's
 * stores to S3 (s3rver, started here), and a server on S3 restores the same recovery point.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { AzureBlobBackend } from '../src/engine/azure-blob-store.js';
import { AZURITE_KEY, S3RVER_KEY_ID, S3RVER_SECRET, startAzurite, startS3rver, type LocalServer } from '../src/engine/testdata/object-servers.js';
import { runCli, startTestServer, type TestServer } from './helpers/server.js';
import { Fixture, BK_API, MiB, env, type Job } from './recovery-fixture.js';
import { get } from './restore-helpers.js';

const bk = { 'api-version': BK_API };
const ST = { 'api-version': '2023-01-01' };
const RS = { 'api-version': '2023-04-01' };
const RG = 'rg-stores';
const SA = 'stgrsstores';
const CONTAINER = 'rsvault-primary';

let azurite: LocalServer;
let s3rver: LocalServer | undefined;
let s: TestServer | undefined;
let f: Fixture;
let storeEnv: Record<string, string>;

beforeAll(async () => {
  azurite = await startAzurite();
  storeEnv = {
    ...env,
    RSVAULT_CHUNK_STORE: 'blob', RSVAULT_BLOB_URL: azurite.url, RSVAULT_BLOB_CONTAINER: CONTAINER, RSVAULT_BLOB_ACCOUNT_KEY: AZURITE_KEY,
    RSVAULT_SECONDARY_CHUNK_STORE: 'fs',
  };
  s = await startTestServer({ env: storeEnv });
  f = new Fixture(s, RG);
  await f.group();
  await s.client.request('PUT', `${f.rgPath()}/providers/Microsoft.Storage/storageAccounts/${SA}`, { query: ST, body: { location: 'local', sku: { name: 'Standard_LRS' }, kind: 'StorageV2' } });
}, 60_000);

afterAll(async () => {
  await s?.stop();
  if (f) rmSync(f.tmp, { recursive: true, force: true });
  await Promise.all([azurite?.stop(), s3rver?.stop()]);
});

async function backupOnce(vault: string, vm: string): Promise<string> {
  expect((await f.opStatus(await f.enable(vault, vm))).status).toBe('Succeeded');
  const job = await f.waitJob(vault, (await f.opStatus(await f.backup(vault, vm))).properties!.jobId);
  expect(job.properties.status, JSON.stringify(job.properties.errorDetails)).toBe('Completed');
  return job.properties.extendedInfo.propertyBag['Recovery Point Id']!;
}

async function restoredOsDisk(vault: string, vm: string, rpId: string): Promise<Buffer> {
  const res = await s!.client.send('POST', `${f.itemPath(vault, vm)}/recoveryPoints/${rpId}/restore`, {
    query: bk,
    body: { properties: { objectType: 'IaasVMRestoreRequest', recoveryPointId: rpId, sourceResourceId: f.vmId(vm), recoveryType: 'RestoreDisks', storageAccountId: `${f.rgPath()}/providers/Microsoft.Storage/storageAccounts/${SA}` } },
  });
  expect(res.status, JSON.stringify(res.body)).toBe(202);
  const job: Job = await f.waitJob(vault, (await f.opStatus(res)).properties!.jobId);
  expect(job.properties.status, JSON.stringify(job.properties.errorDetails)).toBe('Completed');
  const uri = job.properties.extendedInfo.propertyBag['OS Disk Blob Uri']!;
  const sas = await s!.client.request<{ serviceSasToken: string }>('POST', `${f.rgPath()}/providers/Microsoft.Storage/storageAccounts/${SA}/listServiceSas`, {
    query: ST,
    body: { canonicalizedResource: `/blob/${SA}${new URL(uri).pathname}`, signedResource: 'b', signedPermission: 'r', signedExpiry: new Date(Date.now() + 600_000).toISOString() },
  });
  const disk = await get(s!, `${uri}?${sas.serviceSasToken}`);
  expect(disk.status).toBe(200);
  return disk.body;
}

describe('vault chunk stores from the server configuration', () => {
  it('GeoRedundant vault on blob + fs secondary: the primary container deleted, the restore reads the secondary, byte-identical; LocallyRedundant writes only the primary', async () => {
    // A LocallyRedundant vault: one copy, in the primary.
    await f.createVault('rslrs');
    await s!.client.request('PUT', `${f.vaultPath('rslrs')}/backupstorageconfig/vaultstorageconfig`, { query: RS, body: { properties: { storageType: 'LocallyRedundant' } } });
    await f.vm('vmlrs', 4 * MiB);
    await backupOnce('rslrs', 'vmlrs');
    // A GeoRedundant vault (the default): both copies.
    await f.createVault('rsgrs');
    const cfg = await s!.client.request<{ properties: { storageType: string } }>('GET', `${f.vaultPath('rsgrs')}/backupstorageconfig/vaultstorageconfig`, { query: RS });
    expect(cfg.properties.storageType).toBe('GeoRedundant');
    await f.vm('vmgrs', 8 * MiB);
    const expected = readFileSync(path.join(f.tmp, 'vmgrs.raw'));
    const rpId = await backupOnce('rsgrs', 'vmgrs');

    // Chunks and manifests of both vaults are in the blob container, none under the data dir's vault stores.
    const blob = AzureBlobBackend.create({ url: azurite.url, accountKey: AZURITE_KEY, container: CONTAINER });
    const keys: string[] = [];
    for await (const k of blob.list('vaults/')) keys.push(k);
    const vaultUids = [...new Set(keys.map((k) => k.split('/')[1]))];
    expect(vaultUids).toHaveLength(2);
    expect(keys.some((k) => /\/chunks\/[0-9a-f]{64}$/.test(k))).toBe(true);
    expect(keys.filter((k) => /\/meta\/manifests\/\d+\/os\.manifest$/.test(k))).toHaveLength(2);
    for (const uid of readdirSync(path.join(s!.dataDir, 'vaults'))) expect(existsSync(path.join(s!.dataDir, 'vaults', uid, 'store'))).toBe(false);
    // Only the GeoRedundant vault has a secondary copy (fs, <data-dir>/secondary/vaults/<uid>).
    const secondary = readdirSync(path.join(s!.dataDir, 'secondary', 'vaults'));
    expect(secondary).toHaveLength(1);
    const grsUid = secondary[0]!;
    expect(readdirSync(path.join(s!.dataDir, 'secondary', 'vaults', grsUid, 'manifests', rpId)).sort()).toEqual(['index', 'os.manifest']);

    // The primary is gone.
    await blob.destroy();
    const restored = await restoredOsDisk('rsgrs', 'vmgrs', rpId);
    expect(restored.length).toBe(expected.length);
    expect(restored.equals(expected)).toBe(true);
  }, 120_000);

  it('rsvault admin copy-store moves the stores to S3 (verified); a server on S3 restores the recovery point byte-identical', async () => {
    s3rver = await startS3rver();
    // The primary container was deleted above: copy from the secondary, which holds the GeoRedundant vault.
    await s!.stop({ keepData: true });
    const dataDir = s!.dataDir;
    const s3Env = { RSVAULT_TARGET_S3_ENDPOINT: s3rver.url, RSVAULT_TARGET_S3_BUCKET: 'rsvault-moved', RSVAULT_TARGET_S3_ACCESS_KEY_ID: S3RVER_KEY_ID, RSVAULT_TARGET_S3_SECRET_ACCESS_KEY: S3RVER_SECRET };
    const r = await runCli(['admin', 'copy-store', '--data-dir', dataDir, '--chunk-store', 'fs', '--to', 's3'], { ...s3Env, RSVAULT_FS_DIR: path.join(dataDir, 'secondary') });
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, number | string | boolean>);
    expect(lines.at(-1)).toMatchObject({ vaults: 1, failed: 0 });
    expect(lines[0]).toMatchObject({ verified: true, meta: 2 }); // os.manifest + index
    expect(Number(lines[0]!.chunks)).toBeGreaterThan(0);
    expect(r.stdout + r.stderr).not.toContain(S3RVER_SECRET);
    // Bad input: a clear message, exit code 2.
    const bad = await runCli(['admin', 'copy-store', '--data-dir', dataDir, '--to', 'floppy']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/invalid target chunk store 'floppy'/);

    s = await startTestServer({
      dataDir,
      env: { ...env, RSVAULT_CHUNK_STORE: 's3', RSVAULT_S3_ENDPOINT: s3rver.url, RSVAULT_S3_BUCKET: 'rsvault-moved', RSVAULT_S3_ACCESS_KEY_ID: S3RVER_KEY_ID, RSVAULT_S3_SECRET_ACCESS_KEY: S3RVER_SECRET },
    });
    (f as { s: TestServer }).s = s;
    const rps = await s.client.list<{ name: string }>(`${f.itemPath('rsgrs', 'vmgrs')}/recoveryPoints`, { query: bk });
    expect(rps).toHaveLength(1);
    const restored = await restoredOsDisk('rsgrs', 'vmgrs', rps[0]!.name);
    expect(restored.equals(readFileSync(path.join(f.tmp, 'vmgrs.raw')))).toBe(true);
  }, 120_000);
});
