/**
 * Recovery Services against the real server: vaults, policies, discovery, the encrypted-VM preflight and the
 * documented backup flow end to end (BEK+KEK → permissions → enable → backup → recovery point with keyAndSecret),
 * incremental backups, jobs, stop/resume/soft delete, and bad input on every endpoint.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, utimesSync } from 'node:fs';
import path from 'node:path';
import { decodeManifest } from '../src/engine/index.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { Fixture, BK_API, RS_API, MiB, env, type Item, type Job, type RecoveryPoint } from './recovery-fixture.js';

let s: TestServer;
let f: Fixture;
const RG = 'rg-rec';
const suffix = randomBytes(3).toString('hex');
const KV = `kvrec-${suffix}`;
const KV2 = `kvrec2-${suffix}`;
const RSV = 'rsv1';
const bk = { 'api-version': BK_API };
const DISK = 32 * MiB;

async function expectErr(p: Promise<unknown>, status: number, code: string, msg?: RegExp) {
  const e = (await p.then(() => undefined, (x: unknown) => x)) as { status: number; code: string; message: string } | undefined;
  expect(e, `expected ${code}`).toBeDefined();
  expect({ status: e!.status, code: e!.code }).toEqual({ status, code });
  if (msg) expect(e!.message).toMatch(msg);
  return e!;
}

beforeAll(async () => {
  s = await startTestServer({ env });
  f = new Fixture(s, RG);
  await f.group();
  await f.keyVault(KV);
  await f.keyVault(KV2);
  await Promise.all([f.vm('vmenc', DISK), f.vm('vmbek'), f.vm('vmplain'), f.vm('vmlate'), f.vm('vmnoagent', 4 * MiB, { agent: false })]);
  await f.encrypt('vmenc', KV);
  await f.encrypt('vmbek', KV, false);
  await s.client.request('PUT', `${f.rgPath()}/providers/Microsoft.ClassicCompute/virtualMachines/vmclassic`, { query: { 'api-version': '2017-04-01' }, body: { location: 'local', properties: { encryption: { enabled: true } } } });
}, 120_000);

afterAll(async () => {
  await s?.stop();
  if (f) rmSync(f.tmp, { recursive: true, force: true });
});

describe('vaults', () => {
  it('creates a vault (201) with a DefaultPolicy, gets, lists and updates it', async () => {
    const r = await f.createVault(RSV);
    expect(r.status).toBe(201);
    const v = r.body as { id: string; name: string; type: string; location: string; properties: { provisioningState: string } };
    expect(v).toMatchObject({ id: f.vaultPath(RSV), name: RSV, type: 'Microsoft.RecoveryServices/vaults', location: 'local', properties: { provisioningState: 'Succeeded' } });
    expect((await f.createVault(RSV)).status).toBe(200);
    const list = await s.client.list<{ name: string }>(`${f.rgPath()}/providers/Microsoft.RecoveryServices/vaults`, { query: { 'api-version': RS_API } });
    expect(list.map((x) => x.name)).toEqual([RSV]);
    const opsList = await s.client.request<{ value: { name: string }[] }>('GET', '/providers/Microsoft.RecoveryServices/operations', { query: { 'api-version': RS_API } });
    expect(opsList.value.map((o) => o.name)).toContain('Microsoft.RecoveryServices/Vaults/write');
    const all = await s.client.list<{ name: string }>(`/subscriptions/${f.sub}/providers/Microsoft.RecoveryServices/vaults`, { query: { 'api-version': RS_API } });
    expect(all.map((x) => x.name)).toContain(RSV);
    const patched = await s.client.request<{ tags: Record<string, string> }>('PATCH', f.vaultPath(RSV), { query: { 'api-version': RS_API }, body: { tags: { env: 'test' } } });
    expect(patched.tags).toEqual({ env: 'test' });
    // case-insensitive routing and names
    const got = await s.client.request<{ name: string }>('GET', f.vaultPath(RSV).toUpperCase().replace('/SUBSCRIPTIONS/', '/subscriptions/').replace(f.sub.toUpperCase(), f.sub), { query: { 'api-version': RS_API } });
    expect(got.name).toBe(RSV);
    const pols = await s.client.list<{ name: string; properties: { backupManagementType: string; schedulePolicy: { scheduleRunFrequency: string }; retentionPolicy: { dailySchedule: { retentionDuration: { count: number; durationType: string } } }; protectedItemsCount: number } }>(`${f.vaultPath(RSV)}/backupPolicies`, { query: { ...bk, $filter: "backupManagementType eq 'AzureIaasVM'" } });
    expect(pols).toHaveLength(1);
    expect(pols[0]).toMatchObject({ name: 'DefaultPolicy', properties: { backupManagementType: 'AzureIaasVM', schedulePolicy: { scheduleRunFrequency: 'Daily' }, retentionPolicy: { dailySchedule: { retentionDuration: { count: 30, durationType: 'Days' } } }, protectedItemsCount: 0 } });
  });

  it('rejects bad vault input without writing anything', async () => {
    await expectErr(s.client.request('PUT', f.vaultPath('1bad'), { query: { 'api-version': RS_API }, body: { location: 'local' } }), 400, 'InvalidResourceName');
    await expectErr(s.client.request('PUT', f.vaultPath('nolocation'), { query: { 'api-version': RS_API }, body: { sku: { name: 'Standard' } } }), 400, 'InvalidRequestContent', /location/);
    await expectErr(s.client.request('PUT', f.vaultPath('badsku'), { query: { 'api-version': RS_API }, body: { location: 'local', sku: { name: 'Gold' } } }), 400, 'InvalidRequestContent', /sku/);
    await expectErr(s.client.request('PUT', f.vaultPath('noapi'), { body: { location: 'local' } }), 400, 'MissingApiVersionParameter');
    await expectErr(s.client.request('PUT', `/subscriptions/${f.sub}/resourceGroups/nope/providers/Microsoft.RecoveryServices/vaults/v`, { query: { 'api-version': RS_API }, body: { location: 'local' } }), 404, 'ResourceGroupNotFound');
    await expectErr(s.client.request('GET', f.vaultPath('absent'), { query: { 'api-version': RS_API } }), 404, 'ResourceNotFound');
    const list = await s.client.list<{ name: string }>(`${f.rgPath()}/providers/Microsoft.RecoveryServices/vaults`, { query: { 'api-version': RS_API } });
    expect(list.map((x) => x.name)).toEqual([RSV]);
  });

  it('storage config (GeoRedundant by default, PATCH 204) and vault config (soft delete, BEK-only off by default)', async () => {
    const sc = `${f.vaultPath(RSV)}/backupstorageconfig/vaultstorageconfig`;
    expect(await s.client.request('GET', sc, { query: bk })).toMatchObject({ name: 'vaultstorageconfig', properties: { storageType: 'GeoRedundant', storageModelType: 'GeoRedundant', storageTypeState: 'Unlocked' } });
    expect(await s.client.request('PUT', sc, { query: bk, body: { properties: { storageType: 'LocallyRedundant', storageTypeState: 'Unlocked' } } })).toMatchObject({ properties: { storageType: 'LocallyRedundant' } });
    const p = await s.client.send('PATCH', sc, { query: bk, body: { properties: { storageType: 'GeoRedundant' } } });
    expect(p.status).toBe(204);
    await expectErr(s.client.request('PUT', sc, { query: bk, body: { properties: { storageType: 'Tape' } } }), 400, 'BMSUserErrorInvalidInput', /Tape/);
    await expectErr(s.client.request('PUT', sc, { query: bk, body: {} }), 400, 'InvalidRequestContent');
    const vc = `${f.vaultPath(RSV)}/backupconfig/vaultconfig`;
    expect(await s.client.request('GET', vc, { query: bk })).toMatchObject({ properties: { softDeleteFeatureState: 'Enabled', bekOnlyBackup: 'Disabled' } });
    await expectErr(s.client.request('PUT', vc, { query: bk, body: { properties: { softDeleteFeatureState: 'Maybe' } } }), 400, 'BMSUserErrorInvalidInput');
  });
});

describe('policies', () => {
  const pol = (runTime = '2024-01-01T02:30:00Z') => ({
    properties: {
      backupManagementType: 'AzureIaasVM',
      schedulePolicy: { schedulePolicyType: 'SimpleSchedulePolicy', scheduleRunFrequency: 'Weekly', scheduleRunDays: ['Sunday'], scheduleRunTimes: [runTime] },
      retentionPolicy: { retentionPolicyType: 'LongTermRetentionPolicy', weeklySchedule: { daysOfTheWeek: ['Sunday'], retentionTimes: [runTime], retentionDuration: { count: 12, durationType: 'Weeks' } } },
      instantRpRetentionRangeInDays: 5,
      timeZone: 'UTC',
    },
  });
  it('creates, shows, updates and deletes a weekly policy', async () => {
    const p = `${f.vaultPath(RSV)}/backupPolicies/weekly1`;
    const r = await s.client.request<{ name: string; properties: { schedulePolicy: { scheduleRunDays: string[] } } }>('PUT', p, { query: bk, body: pol() });
    expect(r).toMatchObject({ name: 'weekly1', properties: { schedulePolicy: { scheduleRunDays: ['Sunday'] } } });
    expect((await s.client.request<{ name: string }>('GET', p, { query: bk })).name).toBe('weekly1');
    const d = await s.client.send('DELETE', p, { query: bk });
    expect(d.status).toBe(200);
    await expectErr(s.client.request('GET', p, { query: bk }), 404, 'BMSUserErrorPolicyNotFound');
  });
  it('rejects invalid policies with a clear error and writes nothing', async () => {
    const p = `${f.vaultPath(RSV)}/backupPolicies/bad1`;
    await expectErr(s.client.request('PUT', p, { query: bk, body: pol('2024-01-01T02:15:00Z') }), 400, 'BMSUserErrorInvalidPolicyInput', /half hour/);
    await expectErr(s.client.request('PUT', p, { query: bk, body: {} }), 400, 'BMSUserErrorInvalidPolicyInput', /properties/);
    await expectErr(s.client.request('PUT', p, { query: bk, body: 'not json' }), 400, 'InvalidRequestContent');
    await expectErr(s.client.request('GET', p, { query: bk }), 404, 'BMSUserErrorPolicyNotFound');
  });
});

describe('discovery', () => {
  it('refreshContainers: 202 + Location; operationResults 202 while running then 204', async () => {
    const r = await s.client.send('POST', `${f.vaultPath(RSV)}/backupFabrics/Azure/refreshContainers`, { query: { ...bk, $filter: "backupManagementType eq 'AzureIaasVM'" } });
    expect(r.status).toBe(202);
    expect(r.headers['azure-asyncoperation']).toBeUndefined();
    const loc = new URL(String(r.headers.location));
    expect(loc.pathname).toMatch(/\/backupFabrics\/Azure\/operationResults\/[0-9a-f-]{36}$/);
    const seen: number[] = [];
    for (let i = 0; i < 100; i++) {
      const x = await s.client.send('GET', loc.pathname + loc.search);
      seen.push(x.status);
      if (x.status === 204) break;
      await new Promise((res) => setTimeout(res, 20));
    }
    expect(seen[seen.length - 1]).toBe(204);
    expect(seen.every((x) => x === 202 || x === 204)).toBe(true);
  });

  it('lists protectable items with Azure names, flags encrypted VMs', async () => {
    const items = await s.client.list<{ id: string; name: string; properties: { friendlyName: string; virtualMachineId: string; protectionState: string; virtualMachineVersion: string; isEncrypted: boolean } }>(`${f.vaultPath(RSV)}/backupProtectableItems`, { query: { ...bk, $filter: "backupManagementType eq 'AzureIaasVM'" } });
    const enc = items.find((i) => i.properties.friendlyName === 'vmenc')!;
    expect(enc.name).toBe(`VM;iaasvmcontainerv2;${RG};vmenc`);
    expect(enc.id).toBe(`${f.vaultPath(RSV)}/backupFabrics/Azure/protectionContainers/IaasVMContainer;iaasvmcontainerv2;${RG};vmenc/protectableItems/VM;iaasvmcontainerv2;${RG};vmenc`);
    expect(enc.properties).toMatchObject({ virtualMachineId: f.vmId('vmenc'), protectionState: 'NotProtected', virtualMachineVersion: 'Compute', isEncrypted: true });
    expect(items.find((i) => i.properties.friendlyName === 'vmplain')!.properties.isEncrypted).toBe(false);
    expect(items.find((i) => i.properties.friendlyName === 'vmclassic')!.properties.virtualMachineVersion).toBe('ClassicCompute');
    await expectErr(s.client.request('GET', `${f.vaultPath(RSV)}/backupProtectableItems`, { query: { ...bk, $filter: 'garbage here' } }), 400, 'InvalidQueryParameterValue');
  });
});

describe('the documented encrypted backup flow', () => {
  let firstRp: string;
  it('enable without Key Vault access → ConfigureBackup fails with UserErrorKeyVaultPermissionsNotConfigured naming the missing permissions', async () => {
    const r = await f.enable(RSV, 'vmenc');
    expect(r.status).toBe(202);
    expect(String(r.headers['azure-asyncoperation'])).toMatch(/\/protectedItems\/VM;iaasvmcontainerv2;rg-rec;vmenc\/operationsStatus\/[0-9a-f-]{36}\?api-version=2023-02-01$/);
    const st = await f.opStatus(r);
    expect(st.status).toBe('Failed');
    expect(st.error!.code).toBe('UserErrorKeyVaultPermissionsNotConfigured');
    expect(st.error!.message).toContain(KV);
    expect(st.error!.message).toMatch(/missing: keys get, keys list, keys backup, secrets get, secrets list, secrets backup/);
    const job = await f.job(RSV, st.properties!.jobId);
    expect(job.properties).toMatchObject({ operation: 'ConfigureBackup', status: 'Failed', entityFriendlyName: 'vmenc' });
    expect(job.properties.errorDetails[0]).toMatchObject({ errorTitle: 'UserErrorKeyVaultPermissionsNotConfigured', errorCode: expect.any(Number) });
    expect(job.properties.errorDetails[0]!.recommendations[0]).toMatch(/az keyvault set-policy/);
    await expectErr(f.item(RSV, 'vmenc'), 404, 'BMSUserErrorItemNotFound');
    // backupPreValidateProtection says the same synchronously
    const pre = await s.client.request<{ status: string; errorCode: string; errorMessage: string }>('POST', `/subscriptions/${f.sub}/providers/Microsoft.RecoveryServices/locations/local/backupPreValidateProtection`, { query: bk, body: { resourceType: 'VM', resourceId: f.vmId('vmenc'), vaultId: f.vaultPath(RSV), properties: {} } });
    expect(pre).toMatchObject({ status: 'Failed', errorCode: 'UserErrorKeyVaultPermissionsNotConfigured' });
  });

  it('only some permissions → the message lists exactly the missing ones', async () => {
    await f.grantBackup(KV, 'add', { keys: ['get', 'list'], secrets: ['get', 'list', 'backup'] });
    const st = await f.opStatus(await f.enable(RSV, 'vmenc'));
    expect(st.error!.message).toMatch(/missing: keys backup\.$/);
  });

  it('grant the Azure Backup template → enable → ConfigureBackup Completed; item IRPending', async () => {
    await f.grantBackup(KV);
    const r = await f.enable(RSV, 'vmenc');
    const st = await f.opStatus(r);
    expect(st).toMatchObject({ status: 'Succeeded', properties: { objectType: 'OperationStatusJobExtendedInfo' } });
    const job = await f.job(RSV, st.properties!.jobId);
    expect(job.properties).toMatchObject({ operation: 'ConfigureBackup', status: 'Completed' });
    // Location: operationResults answers 200 with the protected item once done
    const loc = new URL(String(r.headers.location));
    const res = await s.client.send<Item>('GET', loc.pathname + loc.search);
    expect(res.status).toBe(200);
    const item = await f.item(RSV, 'vmenc');
    expect(item.name).toBe(`VM;iaasvmcontainerv2;${RG};vmenc`);
    expect(item.properties).toMatchObject({ protectionState: 'IRPending', lastBackupStatus: '', lastBackupTime: '2001-01-01T00:00:00Z', policyName: 'DefaultPolicy', containerName: `iaasvmcontainerv2;${RG};vmenc` });
    // percent-encoded, lower-case names reach the same item
    const enc = await s.client.request<Item>('GET', `${f.vaultPath(RSV)}/backupFabrics/Azure/protectionContainers/iaasvmcontainer%3Biaasvmcontainerv2%3B${RG}%3Bvmenc/protectedItems/vm%3Biaasvmcontainerv2%3B${RG}%3Bvmenc`, { query: bk });
    expect(enc.name).toBe(item.name);
  });

  it('backup now → 202 + Azure-AsyncOperation → Backup job Completed with both tasks → recovery point with keyAndSecret', async () => {
    const r = await f.backup(RSV, 'vmenc');
    expect(r.status).toBe(202);
    const st = await f.opStatus(r);
    expect(st.status).toBe('Succeeded');
    const job = await f.waitJob(RSV, st.properties!.jobId);
    expect(job.properties.status).toBe('Completed');
    expect(job.properties.operation).toBe('Backup');
    expect(job.properties.extendedInfo.tasksList.map((t) => [t.taskId, t.status])).toEqual([['Take Snapshot', 'Completed'], ['Transfer data to vault', 'Completed']]);
    expect(job.properties.extendedInfo.propertyBag).toMatchObject({ 'VM Name': 'vmenc', 'Backup Size': expect.stringMatching(/MB$/) });
    expect(job.properties.extendedInfo.progressPercentage).toBe(100);
    const item = await f.item(RSV, 'vmenc');
    expect(item.properties).toMatchObject({ protectionState: 'Protected', lastBackupStatus: 'Completed', healthStatus: 'Passed' });
    const rps = await s.client.list<RecoveryPoint>(`${f.itemPath(RSV, 'vmenc')}/recoveryPoints`, { query: bk });
    expect(rps).toHaveLength(1);
    firstRp = rps[0]!.name;
    expect(rps[0]!.properties).toMatchObject({ objectType: 'IaasVMRecoveryPoint', isSourceVMEncrypted: true });
    expect(rps[0]!.properties.keyAndSecret).toBeUndefined(); // only on single GET
    const rp = await s.client.request<RecoveryPoint>('GET', `${f.itemPath(RSV, 'vmenc')}/recoveryPoints/${firstRp}`, { query: bk });
    const ks = rp.properties.keyAndSecret!;
    expect(ks.encryptionMechanism).toBe('SinglePass');
    expect(ks.kekDetails!.keyUrl).toMatch(new RegExp(`^https://${KV}\\.vault\\.localhost:${s.port}/keys/kek/`));
    expect(ks.kekDetails!.keyVaultId.toLowerCase()).toBe(f.kvId(KV).toLowerCase());
    expect(ks.kekDetails!.keyBackupData.length).toBeGreaterThan(100);
    expect(ks.bekDetails.secretVaultId.toLowerCase()).toBe(f.kvId(KV).toLowerCase());
    const [, , name, version] = new URL(ks.bekDetails.secretUrl).pathname.split('/');
    const secret = await f.kv<{ value: string }>(KV, 'GET', `/secrets/${name}/${version}`);
    expect(ks.bekDetails.secretData).toBe(secret.value); // the wrapped BEK, never unwrapped
    expect(new Date(rp.properties.recoveryPointProperties.expiryTime).getTime() - Date.now()).toBeGreaterThan(29 * 86_400_000);
  }, 60_000);

  it('a second backup after rewriting 1% of the disk transfers ≤ 2% of the disk; concurrent backup → UserErrorBackupOperationInProgress', async () => {
    await f.guestWrite('vmenc', 5 * MiB, randomBytes(DISK / 100));
    const r = await f.backup(RSV, 'vmenc', new Date(Date.now() + 7 * 86_400_000).toISOString());
    expect(r.status).toBe(202);
    const dup = await f.backup(RSV, 'vmenc');
    expect(dup.status).toBe(409);
    expect((dup.body as { error: { code: string } }).error.code).toBe('UserErrorBackupOperationInProgress');
    const job = await f.waitJob(RSV, (await f.opStatus(r)).properties!.jobId);
    expect(job.properties.status).toBe('Completed');
    const bytes = Number(job.properties.extendedInfo.propertyBag['Bytes Transferred']);
    expect(bytes).toBeGreaterThan(0);
    expect(bytes).toBeLessThanOrEqual(DISK * 0.02);
    // compute's changed-block bitmap limited the reads too (not only dedup)
    expect(Number(job.properties.extendedInfo.propertyBag['Bytes Read'])).toBeLessThanOrEqual(DISK * 0.02);
    expect(job.properties.extendedInfo.propertyBag['Backup Type']).toBe('Incremental');
    const rps = await s.client.list<RecoveryPoint>(`${f.itemPath(RSV, 'vmenc')}/recoveryPoints`, { query: bk });
    expect(rps.map((x) => x.name)).toContain(firstRp);
    expect(rps).toHaveLength(2);
    // date filters
    const future = new Date(Date.now() + 3600_000).toISOString();
    expect(await s.client.list(`${f.itemPath(RSV, 'vmenc')}/recoveryPoints`, { query: { ...bk, $filter: `startDate eq '${future}'` } })).toHaveLength(0);
    expect(await s.client.list(`${f.itemPath(RSV, 'vmenc')}/recoveryPoints`, { query: { ...bk, $filter: `startDate eq '2020-01-01T00:00:00Z' and endDate eq '${future}'` } })).toHaveLength(2);
    await expectErr(s.client.request('GET', `${f.itemPath(RSV, 'vmenc')}/recoveryPoints/123`, { query: bk }), 404, 'UserErrorRecoveryPointNotFound');
  }, 60_000);

  it('the incremental (bitmap) recovery point has exactly the chunks a full read of the same disk gives', async () => {
    const rps = await s.client.list<RecoveryPoint>(`${f.itemPath(RSV, 'vmenc')}/recoveryPoints`, { query: bk });
    const incremental = rps[0]!.name; // newest first
    // make the changed-block record untrustworthy (image touched outside rsvault): the next backup reads everything
    const disk = await s.client.request<{ properties: { rsvault: { imagePath: string } } }>('GET', `${f.rgPath()}/providers/Microsoft.Compute/disks/vmenc-os`, { query: { 'api-version': '2022-08-01' } });
    utimesSync(disk.properties.rsvault.imagePath, new Date(), new Date(Date.now() + 10_000));
    const job = await f.waitJob(RSV, (await f.opStatus(await f.backup(RSV, 'vmenc'))).properties!.jobId);
    expect(job.properties.extendedInfo.propertyBag['Bytes Read']).toBe(String(DISK + 2 * MiB)); // full read (LUKS header included)
    expect(Number(job.properties.extendedInfo.propertyBag['Bytes Transferred'])).toBe(0); // nothing new
    const full = (await s.client.list<RecoveryPoint>(`${f.itemPath(RSV, 'vmenc')}/recoveryPoints`, { query: bk }))[0]!.name;
    const vaults = path.join(s.dataDir, 'vaults');
    const dir = path.join(vaults, readdirSync(vaults)[0]!, 'manifests');
    const a = decodeManifest(readFileSync(path.join(dir, incremental, 'os.manifest')), undefined, { unauthenticated: true });
    const b = decodeManifest(readFileSync(path.join(dir, full, 'os.manifest')), undefined, { unauthenticated: true });
    expect(a.chunkCount).toBe(b.chunkCount);
    expect(Buffer.from(a.ids).equals(Buffer.from(b.ids))).toBe(true);
  }, 60_000);

  it('storage redundancy is locked and the vault cannot be deleted while items are protected', async () => {
    const sc = `${f.vaultPath(RSV)}/backupstorageconfig/vaultstorageconfig`;
    expect(await s.client.request('GET', sc, { query: bk })).toMatchObject({ properties: { storageTypeState: 'Locked' } });
    await expectErr(s.client.request('PUT', sc, { query: bk, body: { properties: { storageType: 'LocallyRedundant' } } }), 409, 'UserErrorVaultHasProtectedItems');
    await expectErr(s.client.request('DELETE', f.vaultPath(RSV), { query: { 'api-version': RS_API } }), 409, 'UserErrorVaultHasProtectedItems');
  });
});

describe('preflight failures', () => {
  it('BEK-only VM → UserErrorBekOnlyEncryptionNotSupported; works once the vault allows BEK-only', async () => {
    const st = await f.opStatus(await f.enable(RSV, 'vmbek'));
    expect(st.error!.code).toBe('UserErrorBekOnlyEncryptionNotSupported');
    expect(st.error!.message).toMatch(/encrypted with BEK alone/);
    await s.client.request('PUT', `${f.vaultPath(RSV)}/backupconfig/vaultconfig`, { query: bk, body: { properties: { bekOnlyBackup: 'Enabled' } } });
    expect((await f.opStatus(await f.enable(RSV, 'vmbek'))).status).toBe('Succeeded');
    const job = await f.waitJob(RSV, (await f.opStatus(await f.backup(RSV, 'vmbek'))).properties!.jobId);
    expect(job.properties.status).toBe('Completed');
    const rps = await s.client.list<RecoveryPoint>(`${f.itemPath(RSV, 'vmbek')}/recoveryPoints`, { query: bk });
    const rp = await s.client.request<RecoveryPoint>('GET', `${f.itemPath(RSV, 'vmbek')}/recoveryPoints/${rps[0]!.name}`, { query: bk });
    expect(rp.properties.keyAndSecret!.kekDetails).toBeUndefined();
    expect(rp.properties.keyAndSecret!.bekDetails.secretData.length).toBeGreaterThan(10);
  }, 60_000);

  it('encrypted classic VM → UserErrorClassicVmNotSupported; no agent → UserErrorGuestAgentStatusUnavailable; missing VM → BCMV2VMNotFound', async () => {
    const classic = `/subscriptions/${f.sub}/resourceGroups/${RG}/providers/Microsoft.ClassicCompute/virtualMachines/vmclassic`;
    const r = await s.client.send('PUT', `${f.vaultPath(RSV)}/backupFabrics/Azure/protectionContainers/iaasvmcontainer;iaasvmcontainer;${RG};vmclassic/protectedItems/vm;iaasvmcontainer;${RG};vmclassic`, { query: bk, body: { properties: { protectedItemType: 'Microsoft.ClassicCompute/virtualMachines', sourceResourceId: classic, policyId: `${f.vaultPath(RSV)}/backupPolicies/DefaultPolicy` } } });
    const st = await f.opStatus(r);
    expect(st.error).toMatchObject({ code: 'UserErrorClassicVmNotSupported' });
    expect(st.error!.message).toMatch(/classic deployment model and is encrypted/);
    expect((await f.opStatus(await f.enable(RSV, 'vmnoagent'))).error).toMatchObject({ code: 'UserErrorGuestAgentStatusUnavailable' });
    const pre = await s.client.request<{ status: string; errorCode: string; recommendation: string }>('POST', `/subscriptions/${f.sub}/providers/Microsoft.RecoveryServices/locations/local/backupPreValidateProtection`, { query: bk, body: { resourceType: 'VM', resourceId: f.vmId('vmnoagent'), vaultId: f.vaultPath(RSV) } });
    expect(pre).toMatchObject({ status: 'Failed', errorCode: 'UserErrorGuestAgentStatusUnavailable' });
    expect(pre.recommendation).toMatch(/agent/);
    const gone = await s.client.send('PUT', f.itemPath(RSV, 'vmghost'), { query: bk, body: { properties: { protectedItemType: 'Microsoft.Compute/virtualMachines', sourceResourceId: f.vmId('vmghost'), policyId: 'DefaultPolicy' } } });
    expect((await f.opStatus(gone)).error).toMatchObject({ code: 'BCMV2VMNotFound' });
    const ok = await s.client.request<{ status: string }>('POST', `/subscriptions/${f.sub}/providers/Microsoft.RecoveryServices/locations/local/backupPreValidateProtection`, { query: bk, body: { resourceType: 'VM', resourceId: f.vmId('vmplain'), vaultId: f.vaultPath(RSV) } });
    expect(ok.status).toBe('Succeeded');
  });

  it('disk exclusion on an encrypted VM → UserErrorEncryptedVmNotSupportedWithDiskEx', async () => {
    const st = await f.opStatus(await f.enable(RSV, 'vmenc', 'DefaultPolicy', { extendedProperties: { diskExclusionProperties: { diskLunList: [0], isInclusionList: true } } }));
    expect(st.error).toMatchObject({ code: 'UserErrorEncryptedVmNotSupportedWithDiskEx' });
  });
});

describe('VM encrypted after it was protected; permission removed later', () => {
  it('plain backup → encrypt → next backup fails with UserErrorKeyVaultPermissionsNotConfigured → grant → next succeeds, encrypted', async () => {
    expect((await f.opStatus(await f.enable(RSV, 'vmlate'))).status).toBe('Succeeded');
    const j1 = await f.waitJob(RSV, (await f.opStatus(await f.backup(RSV, 'vmlate'))).properties!.jobId);
    expect(j1.properties.status).toBe('Completed');
    await f.encrypt('vmlate', KV2);
    const j2 = await f.waitJob(RSV, (await f.opStatus(await f.backup(RSV, 'vmlate'))).properties!.jobId);
    expect(j2.properties.status).toBe('Failed');
    expect(j2.properties.errorDetails[0]).toMatchObject({ errorTitle: 'UserErrorKeyVaultPermissionsNotConfigured' });
    expect(j2.properties.errorDetails[0]!.errorString).toContain(KV2);
    const item = await f.item(RSV, 'vmlate');
    expect(item.properties).toMatchObject({ lastBackupStatus: 'Failed', healthStatus: 'ActionRequired' });
    await f.grantBackup(KV2);
    const j3 = await f.waitJob(RSV, (await f.opStatus(await f.backup(RSV, 'vmlate'))).properties!.jobId);
    expect(j3.properties.status).toBe('Completed');
    const rps = await s.client.list<RecoveryPoint>(`${f.itemPath(RSV, 'vmlate')}/recoveryPoints`, { query: bk });
    expect(rps.map((r) => r.properties.isSourceVMEncrypted)).toEqual([true, false]);
    // remove the permission again: the next backup fails, naming what is missing
    await f.grantBackup(KV2, 'remove');
    const j4 = await f.waitJob(RSV, (await f.opStatus(await f.backup(RSV, 'vmlate'))).properties!.jobId);
    expect(j4.properties.errorDetails[0]!.errorString).toMatch(/missing: keys get, keys list, keys backup, secrets get, secrets list, secrets backup/);
  }, 90_000);
});

describe('jobs', () => {
  it('lists with $filter (status, operation, startTime/endTime), gets, 404s unknown ids', async () => {
    const all = await s.client.list<Job>(`${f.vaultPath(RSV)}/backupJobs`, { query: bk });
    expect(all.length).toBeGreaterThan(5);
    const failedCfg = await s.client.list<Job>(`${f.vaultPath(RSV)}/backupJobs`, { query: { ...bk, $filter: "status eq 'Failed' and operation eq 'ConfigureBackup'" } });
    expect(failedCfg.length).toBeGreaterThan(0);
    expect(failedCfg.every((j) => j.properties.status === 'Failed' && j.properties.operation === 'ConfigureBackup')).toBe(true);
    const future = new Date(Date.now() + 3600_000).toISOString();
    expect(await s.client.list(`${f.vaultPath(RSV)}/backupJobs`, { query: { ...bk, $filter: `startTime eq '${future}'` } })).toHaveLength(0);
    expect((await s.client.list(`${f.vaultPath(RSV)}/backupJobs`, { query: { ...bk, $filter: `backupManagementType eq 'AzureIaasVM' and startTime eq '2020-01-01 10:00:00 AM' and endTime eq '${future}'` } })).length).toBe(all.length);
    await expectErr(s.client.request('GET', `${f.vaultPath(RSV)}/backupJobs/00000000-0000-0000-0000-000000000000`, { query: bk }), 404, 'BMSUserErrorJobNotFound');
    await expectErr(s.client.request('GET', `${f.vaultPath(RSV)}/backupJobs`, { query: { ...bk, $filter: "startTime eq 'yesterday'" } }), 400, 'InvalidQueryParameterValue');
  });

  it('cancel: a running backup ends Cancelled without a recovery point; a finished job is not cancellable', async () => {
    const before = (await s.client.list(`${f.itemPath(RSV, 'vmenc')}/recoveryPoints`, { query: bk })).length;
    await f.guestWrite('vmenc', 0, randomBytes(DISK / 2));
    const r = await f.backup(RSV, 'vmenc');
    const jobId = (await f.opStatus(r)).properties!.jobId;
    const c = await s.client.send('POST', `${f.vaultPath(RSV)}/backupJobs/${jobId}/cancel`, { query: bk });
    const job = await f.waitJob(RSV, jobId);
    const after = (await s.client.list(`${f.itemPath(RSV, 'vmenc')}/recoveryPoints`, { query: bk })).length;
    if (c.status === 202) {
      expect(job.properties.status).toBe('Cancelled');
      expect(after).toBe(before);
    } else {
      // the backup finished before the cancel arrived
      expect((c.body as { error: { code: string } }).error.code).toBe('BMSUserErrorJobNotCancellable');
      expect(job.properties.status).toBe('Completed');
    }
    await expectErr(s.client.request('POST', `${f.vaultPath(RSV)}/backupJobs/${jobId}/cancel`, { query: bk }), 400, 'BMSUserErrorJobNotCancellable');
  }, 60_000);
});

describe('protection lifecycle', () => {
  it('change policy, stop (keep data), resume, delete (soft delete), undelete; bad input rejected', async () => {
    await s.client.request('PUT', `${f.vaultPath(RSV)}/backupPolicies/nightly`, {
      query: bk,
      body: { properties: { backupManagementType: 'AzureIaasVM', schedulePolicy: { schedulePolicyType: 'SimpleSchedulePolicy', scheduleRunFrequency: 'Daily', scheduleRunTimes: ['2024-01-01T23:00:00Z'] }, retentionPolicy: { retentionPolicyType: 'LongTermRetentionPolicy', dailySchedule: { retentionTimes: ['2024-01-01T23:00:00Z'], retentionDuration: { count: 7, durationType: 'Days' } } } } },
    });
    expect((await f.opStatus(await f.enable(RSV, 'vmplain', 'nightly'))).status).toBe('Succeeded');
    expect((await f.item(RSV, 'vmplain')).properties.policyName).toBe('nightly');
    await expectErr(s.client.request('DELETE', `${f.vaultPath(RSV)}/backupPolicies/nightly`, { query: bk }), 409, 'BMSUserErrorPolicyHasProtectedItems');
    expect((await f.opStatus(await f.enable(RSV, 'vmplain', 'DefaultPolicy'))).status).toBe('Succeeded');
    expect((await f.item(RSV, 'vmplain')).properties.policyName).toBe('DefaultPolicy');
    // stop protection, keep data (both documented shapes)
    const stop = await s.client.send('PUT', f.itemPath(RSV, 'vmplain'), { query: bk, body: { properties: { protectedItemType: 'Microsoft.Compute/virtualMachines', sourceResourceId: f.vmId('vmplain'), protectionState: 'ProtectionStopped' } } });
    const stJob = await f.job(RSV, (await f.opStatus(stop)).properties!.jobId);
    expect(stJob.properties).toMatchObject({ operation: 'DisableBackup', status: 'Completed' });
    expect((await f.item(RSV, 'vmplain')).properties).toMatchObject({ protectionState: 'ProtectionStopped', policyName: '' });
    expect((await f.backup(RSV, 'vmplain')).status).toBe(400);
    // resume
    expect((await f.opStatus(await f.enable(RSV, 'vmplain'))).status).toBe('Succeeded');
    expect((await f.item(RSV, 'vmplain')).properties.protectionState).toBe('IRPending');
    const stop2 = await s.client.send('PUT', f.itemPath(RSV, 'vmplain'), { query: bk, body: { properties: { protectedItemType: 'Microsoft.Compute/virtualMachines', sourceResourceId: f.vmId('vmplain'), policyId: '' } } });
    expect((await f.opStatus(stop2)).status).toBe('Succeeded');
    // delete with soft delete: 202 + Azure-AsyncOperation on the vault-level backupOperations
    const del = await s.client.send('DELETE', f.itemPath(RSV, 'vmplain'), { query: bk });
    expect(del.status).toBe(202);
    expect(String(del.headers['azure-asyncoperation'])).toMatch(/\/backupOperations\/[0-9a-f-]{36}/);
    expect(String(del.headers.location)).toMatch(/\/backupOperationResults\/[0-9a-f-]{36}/);
    expect((await f.opStatus(del)).status).toBe('Succeeded');
    const loc = new URL(String(del.headers.location));
    expect((await s.client.send('GET', loc.pathname + loc.search)).status).toBe(204);
    expect((await f.item(RSV, 'vmplain')).properties).toMatchObject({ isScheduledForDeferredDelete: true, protectionState: 'ProtectionStopped' });
    // undelete
    const und = await s.client.send('PUT', f.itemPath(RSV, 'vmplain'), { query: bk, body: { properties: { protectedItemType: 'Microsoft.Compute/virtualMachines', sourceResourceId: f.vmId('vmplain'), isRehydrate: true } } });
    expect((await f.opStatus(und)).status).toBe('Succeeded');
    expect((await f.item(RSV, 'vmplain')).properties.isScheduledForDeferredDelete).toBe(false);

    // bad input: nothing written, server alive
    await expectErr(s.client.request('PUT', `${f.vaultPath(RSV)}/backupFabrics/Azure/protectionContainers/bogus/protectedItems/vm;iaasvmcontainerv2;${RG};vmplain`, { query: bk, body: { properties: {} } }), 400, 'BMSUserErrorInvalidInput', /container name/);
    await expectErr(s.client.request('PUT', f.itemPath(RSV, 'vmnew'), { query: bk, body: { properties: { protectedItemType: 'Microsoft.Compute/virtualMachines', sourceResourceId: f.vmId('vmnew') } } }), 400, 'BMSUserErrorInvalidInput', /policyId/);
    await expectErr(s.client.request('PUT', f.itemPath(RSV, 'vmnew'), { query: bk, body: { properties: { protectedItemType: 'Microsoft.Sql/servers', sourceResourceId: f.vmId('vmnew'), policyId: 'DefaultPolicy' } } }), 400, 'InvalidRequestContent', /protectedItemType/);
    await expectErr(s.client.request('PUT', f.itemPath(RSV, 'vmnew'), { query: bk, body: { properties: { sourceResourceId: f.vmId('other'), policyId: 'DefaultPolicy' } } }), 400, 'BMSUserErrorInvalidInput', /does not match/);
    await expectErr(s.client.request('PUT', f.itemPath(RSV, 'vmnew'), { query: bk, body: { properties: { sourceResourceId: f.vmId('vmnew'), policyId: 'NoSuchPolicy' } } }), 404, 'BMSUserErrorPolicyNotFound');
    await expectErr(s.client.request('PUT', f.itemPath(RSV, 'vmnew'), { query: bk }), 400, 'InvalidRequestContent');
    await expectErr(s.client.request('POST', `${f.itemPath(RSV, 'vmenc')}/backup`, { query: bk, body: { properties: { objectType: 'AzureFileShareBackupRequest' } } }), 400, 'InvalidRequestContent', /IaasVMBackupRequest/);
    await expectErr(s.client.request('POST', `${f.itemPath(RSV, 'vmenc')}/backup`, { query: bk, body: { properties: { objectType: 'IaasVMBackupRequest', recoveryPointExpiryTimeInUTC: '2001-01-01T00:00:00Z' } } }), 400, 'BMSUserErrorInvalidInput', /past/);
    await expectErr(s.client.request('POST', `${f.itemPath(RSV, 'vmnone')}/backup`, { query: bk, body: {} }), 404, 'BMSUserErrorItemNotFound');
    await expectErr(s.client.request('GET', `${f.vaultPath(RSV)}/backupFabrics/Other/protectionContainers/IaasVMContainer;iaasvmcontainerv2;${RG};vmenc/protectedItems/VM;iaasvmcontainerv2;${RG};vmenc`, { query: bk }), 404, 'BMSUserErrorFabricNotFound');
    await expectErr(s.client.request('GET', `${f.vaultPath(RSV)}/backupOperations/00000000-0000-0000-0000-000000000000`, { query: bk }), 404, 'BMSUserErrorOperationNotFound');
    const items = await s.client.list<Item>(`${f.vaultPath(RSV)}/backupProtectedItems`, { query: { ...bk, $filter: "backupManagementType eq 'AzureIaasVM' and itemType eq 'VM'" } });
    expect(items.map((i) => i.properties.containerName).sort()).toEqual([`iaasvmcontainerv2;${RG};vmbek`, `iaasvmcontainerv2;${RG};vmenc`, `iaasvmcontainerv2;${RG};vmlate`, `iaasvmcontainerv2;${RG};vmplain`]);
    const containers = await s.client.list<{ name: string }>(`${f.vaultPath(RSV)}/backupProtectionContainers`, { query: { ...bk, $filter: "backupManagementType eq 'AzureIaasVM' and status eq 'Registered'" } });
    expect(containers.map((c) => c.name)).toContain(`IaasVMContainer;iaasvmcontainerv2;${RG};vmenc`);
    expect((await s.client.request<{ status: string }>('GET', '/healthz', { anonymous: true })).status).toBe('ok');
  }, 60_000);
});

describe('authorization', () => {
  it('a Backup Reader can read the vault and jobs but not write policies or trigger backups; backupStatus reports protection', async () => {
    const sp = await s.client.request<{ id: string; appId: string; passwordCredentials: { secretText: string }[] }>('POST', '/v1.0/servicePrincipals', { body: { displayName: 'rec-reader' } });
    await s.client.request('PUT', `${f.rgPath()}/providers/Microsoft.Authorization/roleAssignments/${randomBytes(16).toString('hex').replace(/(.{8})(.{4})(.{4})(.{4})(.{12})/, '$1-$2-$3-$4-$5')}`, {
      query: { 'api-version': '2022-04-01' },
      body: { properties: { roleDefinitionId: `/subscriptions/${f.sub}/providers/Microsoft.Authorization/roleDefinitions/a795c7a0-776e-4e42-8b41-8b48fd3e9d54`, principalId: sp.id } },
    });
    const c = s.clientFor(sp.appId, sp.passwordCredentials[0]!.secretText);
    try {
      expect((await c.request<{ name: string }>('GET', f.vaultPath(RSV), { query: { 'api-version': RS_API } })).name).toBe(RSV);
      expect((await c.list(`${f.vaultPath(RSV)}/backupJobs`, { query: bk })).length).toBeGreaterThan(0);
      await expectErr(c.request('PUT', `${f.vaultPath(RSV)}/backupPolicies/x1`, { query: bk, body: { properties: {} } }), 403, 'AuthorizationFailed');
      await expectErr(c.request('POST', `${f.itemPath(RSV, 'vmenc')}/backup`, { query: bk, body: {} }), 403, 'AuthorizationFailed');
    } finally {
      c.close();
    }
    const st = await s.client.request<{ protectionStatus: string; vaultId: string; protectedItemName: string }>('POST', `/subscriptions/${f.sub}/providers/Microsoft.RecoveryServices/locations/local/backupStatus`, { query: bk, body: { resourceType: 'VM', resourceId: f.vmId('vmenc') } });
    expect(st).toMatchObject({ protectionStatus: 'Protected', vaultId: f.vaultPath(RSV), protectedItemName: `VM;iaasvmcontainerv2;${RG};vmenc` });
  });
});
