/**
 * The Debian azure-cli 2.45 (unmodified; ADFS-style custom cloud, the compute api-version shim of ../shared/tools
 * only where az.test.ts needs it) runs the whole backup → restore-disks flow against rsvault: `az disk create` and
 * `az storage account create` (PUT answered 202/200 as the API specs document), `az backup vault encryption show`
 * (backupResourceEncryptionConfig), protect, backup-now, `az backup job wait`, `az backup recoverypoint list`, then
 * every restore-disks mode — managed disks (`--target-resource-group`, also with `--restore-mode AlternateLocation`),
 * `--restore-as-unmanaged-disks`, `--storage-account` alone, `--restore-only-osdisk` — each followed by `job wait` /
 * `job show` (Completed) and a check that its outputs exist and hold the backed-up bytes. Also `az keyvault
 * list-deleted` (deletedManagedHSMs) and `az rest` POST directoryObjects/getByIds (Graph).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import https from 'node:https';
import { readFileSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { startTestServer, type TestServer } from './helpers/server.js';
import { azSession, type AzSession } from './helpers/az.js';
import { Fixture, env, COMPUTE_API } from './recovery-fixture.js';

let s: TestServer;
let f: Fixture;
const RG = 'rg-azr';
const TRG = 'rg-azr-target';
const RSV = 'azrvault';
const VM = 'vmazr';
const SA = `saazr${randomBytes(3).toString('hex')}`;
const KV = `kvazr-${randomBytes(3).toString('hex')}`;
let rpName: string;
/** The encrypted OS disk image as it was backed up (no guest writes after the backup). */
let sourceImage: Buffer;

let azs: AzSession;
const az: AzSession['az'] = (args, o) => azs.az(args, o);

function getBytes(url: string, token: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const r = https.request(url, { method: 'GET', ca: s.ca, headers: { authorization: `Bearer ${token}` } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    r.on('error', reject);
    r.end();
  });
}

type JobJson = { name: string; properties: { status: string; operation: string; extendedInfo: { propertyBag: Record<string, string> } } };
const item = ['--vault-name', RSV, '-g', RG, '--container-name', VM, '--item-name', VM];

/** restore-disks with `extra`, then `job wait` and `job show`: the Completed job's property bag. */
async function restoreDisks(extra: string[]): Promise<Record<string, string>> {
  const r = await az(['backup', 'restore', 'restore-disks', ...item, '--rp-name', rpName, '--storage-account', SA, ...extra]);
  expect(r.code, r.err).toBe(0);
  const job = r.json as JobJson;
  expect(job.properties.operation).toBe('Restore');
  const w = await az(['backup', 'job', 'wait', '--vault-name', RSV, '-g', RG, '-n', job.name, '--timeout', '120']);
  expect(w.code, w.err).toBe(0);
  const show = await az(['backup', 'job', 'show', '--vault-name', RSV, '-g', RG, '-n', job.name]);
  expect(show.code, show.err).toBe(0);
  const j = show.json as JobJson;
  expect(j.properties.status, JSON.stringify(j.properties)).toBe('Completed');
  return j.properties.extendedInfo.propertyBag;
}

/** The restored blob (bearer read) holds the backed-up image; the config and template blobs exist. */
async function checkBlobs(bag: Record<string, string>, osBlob: boolean) {
  // the blob plane takes tokens for https://storage.azure.com, as Azure Storage does
  const token = await s.client.token('https://storage.azure.com');
  for (const k of ['Config Blob Uri', 'Template Blob Uri', 'Encryption Info Blob Uri']) {
    expect(bag[k], k).toMatch(/^https:\/\//);
    const b = await getBytes(bag[k]!, token);
    expect(b.status, k).toBe(200);
    expect(() => JSON.parse(b.body.toString()) as unknown).not.toThrow();
  }
  if (osBlob) {
    const os = await getBytes(bag['OS Disk Blob Uri']!, token);
    expect(os.status).toBe(200);
    expect(os.body.equals(sourceImage)).toBe(true);
  } else {
    expect(bag['OS Disk Blob Uri']).toBeUndefined();
  }
}

beforeAll(async () => {
  s = await startTestServer({ env });
  f = new Fixture(s, RG);
  azs = await azSession(s, { prefix: 'rsv-azr-' });
}, 120_000);

afterAll(async () => {
  await s?.stop();
  azs?.close();
  if (f) rmSync(f.tmp, { recursive: true, force: true });
});

describe('az 2.45 (Debian): create, protect, back up and restore disks in every mode', () => {
  it('az group / storage account / disk create exit 0 (PUT answered as the specs document)', async () => {
    for (const g of [RG, TRG]) expect((await az(['group', 'create', '-n', g, '-l', 'local'])).code).toBe(0);
    const sa = await az(['storage', 'account', 'create', '-n', SA, '-g', RG, '-l', 'local', '--sku', 'Standard_LRS']);
    expect(sa.code, sa.err).toBe(0);
    expect(sa.json).toMatchObject({ name: SA, type: 'Microsoft.Storage/storageAccounts', provisioningState: 'Succeeded' });
    const d = await az(['disk', 'create', '-g', RG, '-n', 'azdisk1', '--size-gb', '1']);
    expect(d.code, d.err).toBe(0);
    expect(d.json).toMatchObject({ name: 'azdisk1', diskSizeGb: 1, provisioningState: 'Succeeded' });
    const show = await az(['disk', 'show', '-g', RG, '-n', 'azdisk1']);
    expect(show.code, show.err).toBe(0);
  }, 120_000);

  it('az keyvault list-deleted (deleted vaults + deleted managed HSMs), keyvault list; Graph getByIds through az rest', async () => {
    const ld = await az(['keyvault', 'list-deleted']);
    expect(ld.code, ld.err).toBe(0);
    expect(ld.json).toEqual([]);
    const kl = await az(['keyvault', 'list']);
    expect(kl.code, kl.err).toBe(0);
    // `az role assignment list` resolves principal names with POST /v1.0/directoryObjects/getByIds, but Debian's az 2.45
    // cannot list role assignments at all (its azure-mgmt-authorization is too new: "'RoleDefinitionsOperations' object
    // has no attribute 'config'"); `az rest` sends the same request with az's Graph token.
    const bms = await f.bmsObjectId();
    const body = JSON.stringify({ ids: [s.creds.objectId, bms, '00000000-0000-0000-0000-000000000000'], types: ['user', 'group', 'servicePrincipal', 'directoryObjectPartnerReference'] });
    const r = await az(['rest', '--method', 'post', '--url', `${s.origin}/v1.0/directoryObjects/getByIds`, '--resource', `${s.origin}/`, '--body', body]);
    expect(r.code, r.err).toBe(0);
    const objs = (r.json as { value: { '@odata.type': string; id: string; appId: string; servicePrincipalType: string; displayName: string }[] }).value;
    expect(objs.map((o) => o.id).sort()).toEqual([s.creds.objectId, bms].sort());
    expect(objs.find((o) => o.id === s.creds.objectId)).toMatchObject({ '@odata.type': '#microsoft.graph.servicePrincipal', appId: s.creds.clientId });
    // item 9: the Backup Management Service is an 'Application' service principal, as in Azure
    expect(objs.find((o) => o.id === bms)).toMatchObject({ displayName: 'Backup Management Service', servicePrincipalType: 'Application' });
    const users = await az(['rest', '--method', 'post', '--url', `${s.origin}/v1.0/directoryObjects/getByIds`, '--resource', `${s.origin}/`, '--body', JSON.stringify({ ids: [bms], types: ['user'] })]);
    expect((users.json as { value: unknown[] }).value).toEqual([]);
  }, 60_000);

  it('protect, backup-now, job wait, recoverypoint list; vault encryption show (platform-managed)', async () => {
    await f.keyVault(KV);
    await f.vm(VM);
    await f.encrypt(VM, KV);
    await f.grantBackup(KV);
    const v = await az(['backup', 'vault', 'create', '-n', RSV, '-g', RG, '-l', 'local']);
    expect(v.code, v.err).toBe(0);
    const enc = await az(['backup', 'vault', 'encryption', 'show', '-n', RSV, '-g', RG]);
    expect(enc.code, enc.err).toBe(0);
    expect(enc.json).toMatchObject({ name: 'backupResourceEncryptionConfig', type: 'Microsoft.RecoveryServices/vaults/backupEncryptionConfigs', properties: { encryptionAtRestType: 'MicrosoftManaged', infrastructureEncryptionState: 'Disabled' } });
    const en = await az(['backup', 'protection', 'enable-for-vm', '--vault-name', RSV, '-g', RG, '--vm', f.vmId(VM), '--policy-name', 'DefaultPolicy'], { shim: true });
    expect(en.code, en.err).toBe(0);
    const bn = await az(['backup', 'protection', 'backup-now', ...item, '--backup-management-type', 'AzureIaasVM', '--retain-until', '01-01-2099']);
    expect(bn.code, bn.err).toBe(0);
    const w = await az(['backup', 'job', 'wait', '--vault-name', RSV, '-g', RG, '-n', (bn.json as JobJson).name, '--timeout', '120']);
    expect(w.code, w.err).toBe(0);
    const rps = await az(['backup', 'recoverypoint', 'list', ...item, '--backup-management-type', 'AzureIaasVM']);
    expect(rps.code, rps.err).toBe(0);
    const list = rps.json as { name: string }[];
    expect(list.length).toBe(1);
    rpName = list[0]!.name;
    const disk = await s.client.request<{ properties: { rsvault: { imagePath: string } } }>('GET', `${f.rgPath()}/providers/Microsoft.Compute/disks/${VM}-os`, { query: { 'api-version': COMPUTE_API } });
    sourceImage = readFileSync(disk.properties.rsvault.imagePath);
  }, 180_000);

  it('restore-disks --target-resource-group: managed disks with the backed-up bytes', async () => {
    const bag = await restoreDisks(['--target-resource-group', TRG]);
    expect(bag['Restore Type']).toBe('RestoreDisks');
    expect(bag['Target Resource Group']).toBe(TRG);
    const id = bag['OS Disk Id']!;
    expect(id).toMatch(new RegExp(`/resourceGroups/${TRG}/providers/Microsoft.Compute/disks/`, 'i'));
    const d = await az(['disk', 'show', '--ids', id]);
    expect(d.code, d.err).toBe(0);
    expect((d.json as { encryptionSettingsCollection: { enabled: boolean } }).encryptionSettingsCollection.enabled).toBe(true);
    // the image behind the restored managed disk (rsvault's own property, which az does not print) is the backed-up one
    const disk = await s.client.request<{ properties: { rsvault: { imagePath: string } } }>('GET', id, { query: { 'api-version': COMPUTE_API } });
    expect(readFileSync(disk.properties.rsvault.imagePath).equals(sourceImage)).toBe(true);
    await checkBlobs(bag, false);
  }, 180_000);

  it('restore-disks --restore-mode AlternateLocation --target-resource-group (no target VM: disks only)', async () => {
    const bag = await restoreDisks(['--restore-mode', 'AlternateLocation', '--target-resource-group', TRG]);
    expect(bag['Restore Type']).toBe('RestoreDisks');
    const d = await az(['disk', 'show', '--ids', bag['OS Disk Id']!]);
    expect(d.code, d.err).toBe(0);
  }, 180_000);

  it('restore-disks --restore-as-unmanaged-disks: page blobs in the storage account', async () => {
    const bag = await restoreDisks(['--restore-as-unmanaged-disks']);
    expect(bag['Target Storage Account Name']).toBe(SA);
    expect(bag['OS Disk Id']).toBeUndefined();
    await checkBlobs(bag, true);
  }, 180_000);

  it('az backup vault identity assign + encryption update (customer-managed key) + encryption show; refused on a vault with items', async () => {
    const kid = (await f.kv<{ key: { kid: string } }>(KV, 'GET', '/keys/kek')).key.kid;
    expect((await az(['backup', 'vault', 'create', '-n', 'azcmk', '-g', RG, '-l', 'local'])).code).toBe(0);
    const id = await az(['backup', 'vault', 'identity', 'assign', '--system-assigned', '-n', 'azcmk', '-g', RG]);
    expect(id.code, id.err).toBe(0);
    expect(id.json).toMatchObject({ identity: { type: 'SystemAssigned' } });
    const up = await az(['backup', 'vault', 'encryption', 'update', '-n', 'azcmk', '-g', RG, '--encryption-key-id', kid, '--mi-system-assigned', '--infrastructure-encryption', 'Enabled']);
    expect(up.code, up.err).toBe(0);
    const show = await az(['backup', 'vault', 'encryption', 'show', '-n', 'azcmk', '-g', RG]);
    expect(show.code, show.err).toBe(0);
    expect(show.json).toMatchObject({ properties: { encryptionAtRestType: 'CustomerManaged', keyUri: kid, infrastructureEncryptionState: 'Enabled', useSystemAssignedIdentity: true, lastUpdateStatus: 'Succeeded' } });
    // Azure's rule: a customer-managed key only on a vault that protects nothing yet
    expect((await az(['backup', 'vault', 'identity', 'assign', '--system-assigned', '-n', RSV, '-g', RG])).code).toBe(0);
    const bad = await az(['backup', 'vault', 'encryption', 'update', '-n', RSV, '-g', RG, '--encryption-key-id', kid, '--mi-system-assigned']);
    expect(bad.code).not.toBe(0);
    expect(bad.err).toMatch(/UserErrorCmkVaultHasItems/);
    const still = await az(['backup', 'vault', 'encryption', 'show', '-n', RSV, '-g', RG]);
    expect(still.json).toMatchObject({ properties: { encryptionAtRestType: 'MicrosoftManaged' } });
  }, 180_000);

  it('restore-disks --storage-account only (az warns, restores unmanaged) and --restore-only-osdisk', async () => {
    const bag = await restoreDisks([]);
    await checkBlobs(bag, true);
    const only = await restoreDisks(['--restore-only-osdisk', '--restore-as-unmanaged-disks']);
    await checkBlobs(only, true);
  }, 240_000);
});
