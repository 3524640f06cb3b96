/**
 * The official Azure SDK packages (@azure/arm-recoveryservices, @azure/arm-recoveryservicesbackup) against rsvault:
 * create a vault, list policies, PUT a protected item, trigger a backup, get the job and the recovery point.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { ClientSecretCredential } from '@azure/identity';
import { RecoveryServicesClient } from '@azure/arm-recoveryservices';
import { RecoveryServicesBackupClient, type AzureIaaSVMJob, type IaasVMRecoveryPoint, type AzureIaaSComputeVMProtectedItem } from '@azure/arm-recoveryservicesbackup';
import { startTestServer, type TestServer } from './helpers/server.js';
import { Fixture, env } from './recovery-fixture.js';

let s: TestServer;
let f: Fixture;
const RG = 'rg-sdk';
const KV = `kvsdk-${randomBytes(3).toString('hex')}`;

beforeAll(async () => {
  s = await startTestServer({ env });
  f = new Fixture(s, RG);
  await f.group();
  await f.keyVault(KV);
  await f.vm('vmsdk');
  await f.encrypt('vmsdk', KV);
  await f.grantBackup(KV);
}, 120_000);
afterAll(async () => {
  await s?.stop();
  if (f) rmSync(f.tmp, { recursive: true, force: true });
});

describe('official Azure SDKs', () => {
  it('vault → policies → protected item → backup → job → recovery point', async () => {
    const tls = { tlsOptions: { ca: s.ca.toString() } };
    const credential = new ClientSecretCredential(s.creds.tenantId, s.creds.clientId, s.creds.clientSecret, { authorityHost: s.origin, disableInstanceDiscovery: true, ...tls } as ConstructorParameters<typeof ClientSecretCredential>[3]);
    const opts = { endpoint: s.origin, ...tls } as Record<string, unknown>;
    const rs = new RecoveryServicesClient(credential, f.sub, opts);
    const bk = new RecoveryServicesBackupClient(credential, f.sub, opts);

    const vault = await rs.vaults.beginCreateOrUpdateAndWait(RG, 'sdkvault', { location: 'local', sku: { name: 'Standard' }, properties: { publicNetworkAccess: 'Enabled' } });
    expect(vault).toMatchObject({ name: 'sdkvault', type: 'Microsoft.RecoveryServices/vaults', properties: { provisioningState: 'Succeeded' } });
    const got = await rs.vaults.get(RG, 'sdkvault');
    expect(got.id).toBe(f.vaultPath('sdkvault'));
    const vaults = [];
    for await (const v of rs.vaults.listByResourceGroup(RG)) vaults.push(v.name);
    expect(vaults).toEqual(['sdkvault']);

    const policies = [];
    for await (const p of bk.backupPolicies.list('sdkvault', RG, { filter: "backupManagementType eq 'AzureIaasVM'" })) policies.push(p);
    expect(policies.map((p) => p.name)).toEqual(['DefaultPolicy']);
    expect(policies[0]!.properties?.backupManagementType).toBe('AzureIaasVM');

    await bk.protectionContainers.refresh('sdkvault', RG, 'Azure', { filter: "backupManagementType eq 'AzureIaasVM'" });
    const protectable = [];
    for await (const p of bk.backupProtectableItems.list('sdkvault', RG, { filter: "backupManagementType eq 'AzureIaasVM'" })) protectable.push(p);
    const mine = protectable.find((p) => p.properties?.friendlyName === 'vmsdk')!;
    expect(mine.name).toBe(`VM;iaasvmcontainerv2;${RG};vmsdk`);
    expect(mine.properties?.protectableItemType).toBe('Microsoft.Compute/virtualMachines');

    const container = `IaasVMContainer;iaasvmcontainerv2;${RG};vmsdk`;
    const itemName = `VM;iaasvmcontainerv2;${RG};vmsdk`;
    let asyncUrl = '';
    await bk.protectedItems.createOrUpdate('sdkvault', RG, 'Azure', container, itemName, { properties: { protectedItemType: 'Microsoft.Compute/virtualMachines', sourceResourceId: f.vmId('vmsdk'), policyId: policies[0]!.id } as AzureIaaSComputeVMProtectedItem }, { onResponse: (r) => void (asyncUrl = r.headers.get('azure-asyncoperation') ?? '') });
    const opId = new URL(asyncUrl).pathname.split('/').pop()!;
    let st = await bk.protectedItemOperationStatuses.get('sdkvault', RG, 'Azure', container, itemName, opId);
    for (let i = 0; st.status === 'InProgress' && i < 200; i++) {
      await new Promise((r) => setTimeout(r, 50));
      st = await bk.protectedItemOperationStatuses.get('sdkvault', RG, 'Azure', container, itemName, opId);
    }
    expect(st.status).toBe('Succeeded');
    const item = await bk.protectedItems.get('sdkvault', RG, 'Azure', container, itemName);
    expect(item.properties).toMatchObject({ protectedItemType: 'Microsoft.Compute/virtualMachines', protectionState: 'IRPending', friendlyName: 'vmsdk' });

    let backupUrl = '';
    await bk.backups.trigger('sdkvault', RG, 'Azure', container, itemName, { properties: { objectType: 'IaasVMBackupRequest', recoveryPointExpiryTimeInUTC: new Date(Date.now() + 10 * 86_400_000) } }, { onResponse: (r) => void (backupUrl = r.headers.get('azure-asyncoperation') ?? '') });
    const bop = await bk.backupOperationStatuses.get('sdkvault', RG, new URL(backupUrl).pathname.split('/').pop()!);
    expect(bop.status).toBe('Succeeded');
    const jobId = (bop.properties as { jobId?: string }).jobId!;
    let job = await bk.jobDetails.get('sdkvault', RG, jobId);
    for (let i = 0; (job.properties as AzureIaaSVMJob).status === 'InProgress' && i < 600; i++) {
      await new Promise((r) => setTimeout(r, 100));
      job = await bk.jobDetails.get('sdkvault', RG, jobId);
    }
    const jp = job.properties as AzureIaaSVMJob;
    expect(jp).toMatchObject({ jobType: 'AzureIaaSVMJob', operation: 'Backup', status: 'Completed', entityFriendlyName: 'vmsdk' });
    expect(jp.extendedInfo?.tasksList?.map((t) => t.taskId)).toEqual(['Take Snapshot', 'Transfer data to vault']);
    expect(typeof jp.duration).toBe('string');

    const jobs = [];
    for await (const j of bk.backupJobs.list('sdkvault', RG, { filter: "operation eq 'Backup' and status eq 'Completed'" })) jobs.push(j.name);
    expect(jobs).toEqual([jobId]);

    const rps = [];
    for await (const rp of bk.recoveryPoints.list('sdkvault', RG, 'Azure', container, itemName)) rps.push(rp);
    expect(rps).toHaveLength(1);
    const rp = await bk.recoveryPoints.get('sdkvault', RG, 'Azure', container, itemName, rps[0]!.name!);
    const p = rp.properties as IaasVMRecoveryPoint;
    expect(p.objectType).toBe('IaasVMRecoveryPoint');
    expect(p.isSourceVMEncrypted).toBe(true);
    expect(p.keyAndSecret?.encryptionMechanism).toBe('SinglePass');
    expect(p.keyAndSecret?.kekDetails?.keyBackupData?.length).toBeGreaterThan(100);
    expect(p.keyAndSecret?.bekDetails?.secretData?.length).toBeGreaterThan(10);
    expect(p.recoveryPointTime).toBeInstanceOf(Date);

    // errors surface as RestError with the ARM code
    const e = await bk.protectedItems.get('sdkvault', RG, 'Azure', container.replace('vmsdk', 'nope'), itemName.replace('vmsdk', 'nope')).catch((x: unknown) => x as { code?: string; statusCode?: number });
    expect(e).toMatchObject({ code: 'BMSUserErrorItemNotFound', statusCode: 404 });
  }, 90_000);
});
