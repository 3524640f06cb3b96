// The whole encrypted-VM backup-and-restore flow with the official JavaScript Azure SDKs only (@azure/identity,
// arm-resources, arm-resourcesdeployments, arm-compute, arm-storage, arm-recoveryservices(backup), keyvault-keys,
// storage-blob), as a user runs it: `NODE_EXTRA_CA_CERTS=<ca.pem> node e2e-js.mjs '<json>'`. Guest bytes go through
// rsvault's guest I/O API (no Azure client has one). Prints one JSON object: the steps that passed, what each saw,
// and, if a step threw, which one and why.
/* global console, fetch, setTimeout, URL */
import { Buffer } from 'node:buffer';
import { createHash } from 'node:crypto';
import process from 'node:process';
import { ClientSecretCredential } from '@azure/identity';
import { ResourceManagementClient } from '@azure/arm-resources';
import { DeploymentsClient } from '@azure/arm-resourcesdeployments';
import { ComputeManagementClient } from '@azure/arm-compute';
import { StorageManagementClient } from '@azure/arm-storage';
import { RecoveryServicesClient } from '@azure/arm-recoveryservices';
import { RecoveryServicesBackupClient } from '@azure/arm-recoveryservicesbackup';
import { KeyClient } from '@azure/keyvault-keys';
import { BlobServiceClient } from '@azure/storage-blob';
import { ServiceClient } from '@azure/core-client';
import { createPipelineRequest } from '@azure/core-rest-pipeline';

const a = JSON.parse(process.argv[2]);
const out = { steps: [] };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sha = (b) => createHash('sha256').update(b).digest('hex');
const cred = new ClientSecretCredential(a.tenantId, a.clientId, a.clientSecret, { authorityHost: a.origin, disableInstanceDiscovery: true });
const arm = { endpoint: a.origin, credentialScopes: [`${a.origin}/.default`] };
const rm = new ResourceManagementClient(cred, a.sub, arm);
const dep = new DeploymentsClient(cred, a.sub, arm);
const cp = new ComputeManagementClient(cred, a.sub, arm);
const st = new StorageManagementClient(cred, a.sub, arm);
const rs = new RecoveryServicesClient(cred, a.sub, arm);
const bk = new RecoveryServicesBackupClient(cred, a.sub, arm);
const { rg, kv, vm, rsv, sa } = a;
const rgId = `/subscriptions/${a.sub}/resourceGroups/${rg}`;
const container = `IaasVMContainer;iaasvmcontainerv2;${rg};${vm}`;
const item = `VM;iaasvmcontainerv2;${rg};${vm}`;

// rsvault's guest I/O (the bytes a guest would write/read on its disk), with an ARM token from the same credential.
async function guest(vmName, op, offset, data, length) {
  const t = await cred.getToken(`${a.origin}/.default`);
  const q = `api-version=2022-08-01&osDisk=true&offset=${offset}${length ? `&length=${length}` : ''}`;
  const r = await fetch(`${a.origin}${rgId}/providers/Microsoft.Compute/virtualMachines/${vmName}/guestIo/${op}?${q}`, { method: 'POST', headers: { authorization: `Bearer ${t.token}`, 'content-type': 'application/octet-stream' }, body: data });
  if (r.status !== 200) throw new Error(`guest ${op}: ${r.status} ${await r.text()}`);
  return Buffer.from(await r.arrayBuffer());
}
async function step(name, fn) {
  const t0 = Date.now();
  const r = await fn();
  out.steps.push(name);
  (out.ms ??= {})[name] = Date.now() - t0;
  process.stderr.write(`${name} ${Date.now() - t0} ms\n`);
  if (r !== undefined) out[name] = r;
  return r;
}
async function waitJob(id) {
  for (let i = 0; i < 1200; i++) {
    const j = await bk.jobDetails.get(rsv, rg, id);
    if (!['InProgress', 'Cancelling'].includes(j.properties.status)) return j;
    await sleep(200);
  }
  throw new Error(`job ${id} did not finish`);
}
// The operation the SDK call started (Azure-AsyncOperation), then its job.
async function jobOf(asyncUrl) {
  const opId = new URL(asyncUrl).pathname.split('/').pop();
  for (let i = 0; i < 600; i++) {
    const s = await bk.backupOperationStatuses.get(rsv, rg, opId);
    if (s.status !== 'InProgress') {
      if (s.status !== 'Succeeded') throw new Error(`operation ${s.status}: ${JSON.stringify(s.error)}`);
      return waitJob(s.properties.jobId);
    }
    await sleep(200);
  }
  throw new Error('operation did not finish');
}

try {
  await step('group', async () => (await rm.resourceGroups.createOrUpdate(rg, { location: 'local' })).properties.provisioningState);

  await step('keyVault', async () => {
    // The Backup Management Service's object id, from Graph (as `az ad sp show --id 262044b1-…` finds it).
    const graph = new ServiceClient({ credential: cred, credentialScopes: [`${a.origin}/.default`] });
    const res = await graph.sendRequest(createPipelineRequest({ url: `${a.origin}/v1.0/servicePrincipals?$filter=${encodeURIComponent("appId eq '262044b1-e2ce-469f-a196-69ab7ada62d3'")}`, method: 'GET' }));
    const bms = JSON.parse(res.bodyAsText).value[0].id;
    // No @azure/arm-keyvault here: the generic resource client of @azure/arm-resources creates the vault.
    const v = await rm.resources.beginCreateOrUpdateByIdAndWait(`${rgId}/providers/Microsoft.KeyVault/vaults/${kv}`, '2023-07-01', {
      location: 'local',
      properties: {
        tenantId: a.tenantId, sku: { family: 'A', name: 'standard' }, enabledForDiskEncryption: true,
        accessPolicies: [
          { tenantId: a.tenantId, objectId: a.objectId, permissions: { keys: ['all'], secrets: ['all'] } },
          { tenantId: a.tenantId, objectId: bms, permissions: { keys: ['get', 'list', 'backup'], secrets: ['get', 'list', 'backup'] } },
        ],
      },
    });
    return { vaultUri: v.properties.vaultUri, enabledForDiskEncryption: v.properties.enabledForDiskEncryption };
  });
  const vaultUrl = out.keyVault.vaultUri.replace(/\/$/, '');
  const kek = await step('kek', async () => (await new KeyClient(vaultUrl, cred).createRsaKey('kek', { keySize: 2048 })).id);

  await step('vm', async () => {
    // Disks imported from images in the server's import directory (small, so the flow stays fast).
    const disk = async (n, src) => (await cp.disks.beginCreateOrUpdateAndWait(rg, n, { location: 'local', osType: n.endsWith('-os') ? 'Linux' : undefined, creationData: { createOption: 'Import', sourceUri: src } })).id;
    const [os, data] = await Promise.all([disk(`${vm}-os`, a.osImage), disk(`${vm}-data`, a.dataImage)]);
    const v = await cp.virtualMachines.beginCreateOrUpdateAndWait(rg, vm, {
      location: 'local', hardwareProfile: { vmSize: 'Standard_DS1_v2' },
      storageProfile: { osDisk: { osType: 'Linux', createOption: 'Attach', managedDisk: { id: os } }, dataDisks: [{ lun: 0, createOption: 'Attach', managedDisk: { id: data } }] },
    });
    return { state: v.provisioningState, disks: 1 + v.storageProfile.dataDisks.length };
  });
  await step('encrypt', async () => {
    const e = await cp.virtualMachineExtensions.beginCreateOrUpdateAndWait(rg, vm, 'AzureDiskEncryptionForLinux', {
      location: 'local', publisher: 'Microsoft.Azure.Security', typePropertiesType: 'AzureDiskEncryptionForLinux', typeHandlerVersion: '1.1',
      settings: { EncryptionOperation: 'EnableEncryption', KeyVaultURL: `${vaultUrl}/`, KeyVaultResourceId: `${rgId}/providers/Microsoft.KeyVault/vaults/${kv}`, KeyEncryptionKeyURL: kek, KekVaultResourceId: `${rgId}/providers/Microsoft.KeyVault/vaults/${kv}`, KeyEncryptionAlgorithm: 'RSA-OAEP', VolumeType: 'All' },
    });
    const iv = await cp.virtualMachines.instanceView(rg, vm);
    return { state: e.provisioningState, diskEncrypted: iv.disks?.map((d) => d.encryptionSettings?.[0]?.enabled ?? false) };
  });
  await step('guestWrite1', async () => void (await guest(vm, 'write', a.off1, Buffer.from(a.bytes1, 'hex'))));

  await step('vault', async () => (await rs.vaults.beginCreateOrUpdateAndWait(rg, rsv, { location: 'local', sku: { name: 'Standard' }, properties: { publicNetworkAccess: 'Enabled' } })).properties.provisioningState);
  await step('protect', async () => {
    const policy = await bk.protectionPolicies.get(rsv, rg, 'DefaultPolicy');
    let url = '';
    await bk.protectedItems.createOrUpdate(rsv, rg, 'Azure', container, item, { properties: { protectedItemType: 'Microsoft.Compute/virtualMachines', sourceResourceId: `${rgId}/providers/Microsoft.Compute/virtualMachines/${vm}`, policyId: policy.id } }, { onResponse: (r) => void (url = r.headers.get('azure-asyncoperation') ?? '') });
    const opId = new URL(url).pathname.split('/').pop();
    let s = await bk.protectedItemOperationStatuses.get(rsv, rg, 'Azure', container, item, opId);
    for (let i = 0; s.status === 'InProgress' && i < 600; i++) {
      await sleep(100);
      s = await bk.protectedItemOperationStatuses.get(rsv, rg, 'Azure', container, item, opId);
    }
    return (await bk.protectedItems.get(rsv, rg, 'Azure', container, item)).properties.protectionState;
  });
  const backup = async () => {
    let url = '';
    await bk.backups.trigger(rsv, rg, 'Azure', container, item, { properties: { objectType: 'IaasVMBackupRequest', recoveryPointExpiryTimeInUTC: new Date(Date.now() + 30 * 86_400_000) } }, { onResponse: (r) => void (url = r.headers.get('azure-asyncoperation') ?? '') });
    const j = await jobOf(url);
    return { status: j.properties.status, bag: j.properties.extendedInfo?.propertyBag ?? {} };
  };
  await step('backup1', backup);
  await step('guestWrite2', async () => void (await guest(vm, 'write', a.off2, Buffer.from(a.bytes2, 'hex'))));
  await step('backup2', backup);
  const rp = await step('recoveryPoints', async () => {
    const rps = [];
    for await (const p of bk.recoveryPoints.list(rsv, rg, 'Azure', container, item)) rps.push({ name: p.name, time: p.properties.recoveryPointTime.toISOString(), encrypted: p.properties.isSourceVMEncrypted });
    return rps.sort((x, y) => (x.time < y.time ? 1 : -1));
  });

  await step('storageAccount', async () => (await st.storageAccounts.beginCreateAndWait(rg, sa, { location: 'local', sku: { name: 'Standard_LRS' }, kind: 'StorageV2' })).provisioningState);
  const bag = await step('restoreDisks', async () => {
    let url = '';
    await bk.restores.beginTrigger(rsv, rg, 'Azure', container, item, rp[0].name, {
      properties: { objectType: 'IaasVMRestoreRequest', recoveryPointId: rp[0].name, recoveryType: 'RestoreDisks', sourceResourceId: `${rgId}/providers/Microsoft.Compute/virtualMachines/${vm}`, storageAccountId: `${rgId}/providers/Microsoft.Storage/storageAccounts/${sa}`, region: 'local', originalStorageAccountOption: false, encryptionDetails: { encryptionEnabled: true } },
    }, { onResponse: (r) => void (url ||= r.headers.get('azure-asyncoperation') ?? '') });
    const j = await jobOf(url);
    if (j.properties.status !== 'Completed') throw new Error(`restore job ${j.properties.status}: ${JSON.stringify(j.properties.errorDetails)}`);
    return j.properties.extendedInfo.propertyBag;
  });

  const template = await step('download', async () => {
    const blob = new BlobServiceClient(`https://${sa}.blob.localhost:${a.port}`, cred);
    const cc = blob.getContainerClient(bag['Config Blob Container Name']);
    const names = [];
    for await (const b of cc.listBlobsFlat()) names.push(b.name);
    const text = async (n) => (await cc.getBlobClient(n).downloadToBuffer()).toString('utf8');
    const config = JSON.parse(await text(bag['Config Blob Name']));
    const tpl = await text(bag['Template Blob Uri'].split('/').pop());
    const osName = bag['OS Disk Blob Uri'].split('/').pop();
    const vhd = await cc.getBlobClient(osName).downloadToBuffer();
    const head = await cc.getBlobClient(osName).download(0, 6);
    const chunks = [];
    for await (const c of head.readableStreamBody) chunks.push(c);
    return { blobs: names.sort(), configVmName: config.name ?? config.properties?.osProfile?.computerName ?? null, vhdBytes: vhd.length, vhdSha: sha(vhd), vhdHead: Buffer.concat(chunks).toString('hex'), template: tpl };
  });
  out.download = { ...out.download, template: undefined };

  await step('deploy', async () => {
    const d = await dep.deployments.beginCreateOrUpdateAndWait(rg, 'restore-js', { properties: { mode: 'Incremental', template: JSON.parse(template.template), parameters: { VirtualMachineName: { value: a.restoredVm } } } });
    return { state: d.properties.provisioningState, resources: d.properties.outputResources.map((r) => r.id.split('/').pop()) };
  });
  await step('start', async () => {
    await cp.virtualMachines.beginStartAndWait(rg, a.restoredVm);
    const iv = await cp.virtualMachines.instanceView(rg, a.restoredVm);
    return iv.statuses.map((s) => s.code);
  });
  await step('guestRead', async () => ({
    bytes1: (await guest(a.restoredVm, 'read', a.off1, undefined, a.bytes1.length / 2)).toString('hex'),
    bytes2: (await guest(a.restoredVm, 'read', a.off2, undefined, a.bytes2.length / 2)).toString('hex'),
  }));
} catch (e) {
  out.failed = { after: out.steps.at(-1) ?? null, error: String(e?.stack ?? e).slice(0, 2000), code: e?.code, statusCode: e?.statusCode };
}
console.log(JSON.stringify(out));
