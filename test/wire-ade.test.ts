/**
 * Issue #13 items 5 and 6, against the real server.
 *
 * 5. A VM created from restored encrypted disks — restore as managed disks + `rsvault vm create --attach-*`, the
 *    generated template through `rsvault deployment group create`, and restore as a new VM (AlternateLocation) —
 *    starts and reads the original guest bytes through the guest I/O API with no `disk unlock` step: compute fetches
 *    the BEK and unwraps it with the KEK as the disk-encryption platform principal, which a vault admits only while it
 *    is `enabledForDiskEncryption`. A vault not enabled for disk encryption, or a deleted BEK secret, fails the start
 *    (and the create) with an ADE error code and the fixing command; the VM keeps its state.
 * 6. `az vm encryption show` (Debian az 2.45, compute shim) reports the disks' real state: Encrypted for the OS and
 *    data disks of the original and the restored VMs; NotEncrypted for a data disk left out of encryption and for the
 *    disks of a VM whose encryption was disabled.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { startTestServer, type TestServer } from './helpers/server.js';
import { azSession, SHIM, type AzSession } from './helpers/az.js';
import { Fixture, BK_API, COMPUTE_API, KV_API, MiB, env, type Job } from './recovery-fixture.js';
import { cli, post } from './restore-helpers.js';

let s: TestServer;
let f: Fixture;
let tmp: string;
let cliEnv: Record<string, string>;
const RG = 'rg-ade';
const sfx = randomBytes(3).toString('hex');
const KV = `kvade-${sfx}`;
const SA = `stade${sfx}`;
const RSV = 'rsvade';
const VM = 'vmade';
const q = { 'api-version': COMPUTE_API };
let rpId: string;
const original: { os?: Buffer; data?: Buffer } = {};

type OpError = { status: string; error?: { code: string; message: string; recommendation?: string; additionalInfo?: { info: { text: string } }[] } };
type VmModel = { properties: { storageProfile: { osDisk: { managedDisk: { id: string } } }; instanceView?: { statuses: { code: string }[] } } };

let azs: AzSession;
const az: AzSession['az'] = (args, o) => azs.az(args, o);

/** Guest I/O read of a whole disk (`sel`: osDisk=true or lun=N): the bytes the guest sees (through the LUKS layer). */
async function guestRead(vm: string, sel: string): Promise<{ status: number; body: Buffer }> {
  return post(s, `${s.origin}${f.vmId(vm)}/guestIo/read?api-version=${COMPUTE_API}&${sel}&offset=0`, Buffer.alloc(0), await s.client.token());
}

/** A Linux VM with an OS disk and one data disk (lun 0) of random bytes, both imported. */
async function vmWithData(name: string, size = 4 * MiB) {
  const disks: string[] = [];
  for (const k of ['os', 'data']) {
    const file = path.join(f.tmp, `${name}-${k}.raw`);
    writeFileSync(file, randomBytes(size));
    const id = `${f.rgPath()}/providers/Microsoft.Compute/disks/${name}-${k}`;
    await s.client.request('PUT', id, { query: q, body: { location: 'local', properties: { creationData: { createOption: 'Import', sourceUri: file } } } });
    disks.push(id);
  }
  await s.client.request('PUT', f.vmId(name), {
    query: q,
    body: { location: 'local', properties: { hardwareProfile: { vmSize: 'Standard_DS1_v2' }, osProfile: { computerName: name, adminUsername: 'azureuser' }, storageProfile: { osDisk: { osType: 'Linux', createOption: 'Attach', managedDisk: { id: disks[0] } }, dataDisks: [{ lun: 0, createOption: 'Attach', managedDisk: { id: disks[1] } }] } } },
  });
}

async function encrypt(vm: string, volumeType: string, op = 'EnableEncryption') {
  const settings = { EncryptionOperation: op, KeyVaultURL: `https://${KV}.vault.localhost:${s.port}/`, KeyVaultResourceId: f.kvId(KV), KeyEncryptionKeyURL: `https://${KV}.vault.localhost:${s.port}/keys/kek`, KekVaultResourceId: f.kvId(KV), KeyEncryptionAlgorithm: 'RSA-OAEP', VolumeType: volumeType };
  const res = await s.client.send('PUT', `${f.vmId(vm)}/extensions/AzureDiskEncryptionForLinux`, { query: q, body: { location: 'local', properties: { publisher: 'Microsoft.Azure.Security', type: 'AzureDiskEncryptionForLinux', typeHandlerVersion: '1.1', settings } } });
  expect(res.status, JSON.stringify(res.body)).toBeLessThan(300);
  await s.client.waitForOperation(res, { intervalMs: 100, timeoutMs: 60_000 });
}

/** POST start/deallocate; resolves to the final operation status (Failed included). */
async function power(vm: string, action: 'start' | 'deallocate'): Promise<OpError> {
  const res = await s.client.send('POST', `${f.vmId(vm)}/${action}`, { query: q });
  expect(res.status).toBe(202);
  const url = new URL(String(res.headers['azure-asyncoperation']));
  for (let i = 0; i < 600; i++) {
    const st = await s.client.request<OpError>('GET', url.pathname + url.search);
    if (st.status !== 'InProgress') return st;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('operation did not finish');
}

async function expectOriginalBytes(vm: string) {
  const osr = await guestRead(vm, 'osDisk=true');
  expect(osr.status, osr.body.toString().slice(0, 400)).toBe(200);
  expect(osr.body.equals(original.os!)).toBe(true);
  const dr = await guestRead(vm, 'lun=0');
  expect(dr.status, dr.body.toString().slice(0, 400)).toBe(200);
  expect(dr.body.equals(original.data!)).toBe(true);
}

function restoreDisks(extra: Record<string, unknown>) {
  return s.client.send('POST', `${f.itemPath(RSV, VM)}/recoveryPoints/${rpId}/restore`, { query: { 'api-version': BK_API }, body: { properties: { objectType: 'IaasVMRestoreRequest', recoveryType: 'RestoreDisks', recoveryPointId: rpId, sourceResourceId: f.vmId(VM), storageAccountId: `${f.rgPath()}/providers/Microsoft.Storage/storageAccounts/${SA}`, ...extra } } });
}

async function restoredDiskIds(): Promise<{ os: string; data: string }> {
  const res = await restoreDisks({ targetResourceGroupId: f.rgPath() });
  expect(res.status, JSON.stringify(res.body)).toBe(202);
  const job: Job = await f.waitJob(RSV, (await f.opStatus(res)).properties!.jobId);
  expect(job.properties.status, JSON.stringify(job.properties.errorDetails)).toBe('Completed');
  const bag = job.properties.extendedInfo.propertyBag;
  return { os: bag['OS Disk Id']!, data: bag['Data Disk (lun 0) Id']! };
}

beforeAll(async () => {
  if (!SHIM) throw new Error('the az compute shim (../shared/tools/az-compute-shim) was not found: set RSVAULT_AZ_SHIM');
  s = await startTestServer({ env });
  f = new Fixture(s, RG);
  tmp = mkdtempSync(path.join(os.tmpdir(), 'rsv-ade-'));
  cliEnv = { RSVAULT_CONFIG_DIR: path.join(tmp, 'cfg') };
  await f.group();
  await f.keyVault(KV);
  await vmWithData(VM);
  await encrypt(VM, 'All');
  await f.guestWrite(VM, 8192, Buffer.from('ADE-OS-MARKER'));
  await post(s, `${s.origin}${f.vmId(VM)}/guestIo/write?api-version=${COMPUTE_API}&lun=0&offset=4096`, Buffer.from('ADE-DATA-MARKER'), await s.client.token());
  original.os = (await guestRead(VM, 'osDisk=true')).body;
  original.data = (await guestRead(VM, 'lun=0')).body;
  expect(original.os.length).toBe(4 * MiB);
  expect(original.data.includes(Buffer.from('ADE-DATA-MARKER'))).toBe(true);
  await f.grantBackup(KV);
  await f.createVault(RSV);
  await f.opStatus(await f.enable(RSV, VM));
  const job = await f.waitJob(RSV, (await f.opStatus(await f.backup(RSV, VM))).properties!.jobId);
  expect(job.properties.status).toBe('Completed');
  rpId = job.properties.extendedInfo.propertyBag['Recovery Point Id']!;
  await s.client.request('PUT', `${f.rgPath()}/providers/Microsoft.Storage/storageAccounts/${SA}`, { query: { 'api-version': '2023-01-01' }, body: { location: 'local', sku: { name: 'Standard_LRS' }, kind: 'StorageV2' } });
  const login = await cli(cliEnv, 'login', '--server', s.origin, '--service-principal', '-u', s.creds.clientId, '-p', s.creds.clientSecret, '--tenant', s.creds.tenantId, '--ca-file', s.creds.caPath);
  expect(login.code, login.stderr).toBe(0);

  azs = await azSession(s, { shimAlways: true, cloudName: 'RsvAde', prefix: 'rsv-ade-az-' });
}, 240_000);

afterAll(async () => {
  await s?.stop();
  if (f) rmSync(f.tmp, { recursive: true, force: true });
  azs?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('a VM from restored encrypted disks starts and reads its disks with no unlock step (issue #13 item 5)', () => {
  it('restore as managed disks → rsvault vm create --attach-* → deallocate → start → guest reads equal the original', async () => {
    const ids = await restoredDiskIds();
    const disk = await s.client.request<{ properties: { rsvault: { locked: boolean } } }>('GET', ids.os, { query: q });
    expect(disk.properties.rsvault.locked).toBe(true); // nobody unlocked it
    const vc = await cli(cliEnv, 'vm', 'create', '-g', RG, '-n', 'vmcli', '--attach-os-disk', ids.os, '--attach-data-disks', ids.data, '--os-type', 'Linux', '-o', 'json');
    expect(vc.code, vc.stderr).toBe(0);
    await expectOriginalBytes('vmcli');
    expect((await cli(cliEnv, 'vm', 'deallocate', '-g', RG, '-n', 'vmcli')).code).toBe(0);
    expect((await s.client.request<{ properties: { rsvault: { locked: boolean } } }>('GET', ids.os, { query: q })).properties.rsvault.locked).toBe(true); // released at deallocation
    const st = await cli(cliEnv, 'vm', 'start', '-g', RG, '-n', 'vmcli');
    expect(st.code, st.stderr).toBe(0);
    await expectOriginalBytes('vmcli');
    // The platform read the BEK and unwrapped it with the KEK as its own principal (in the vault's audit log), not the caller.
    const audit = await s.client.request<{ value: { operationName: string; callerObjectId: string; httpStatusCode: number }[] }>('GET', `${f.kvId(KV)}/auditEvents`, { query: { 'api-version': KV_API } });
    const unwraps = audit.value.filter((e) => /unwrap/i.test(e.operationName) && e.httpStatusCode === 200);
    expect(unwraps.length).toBeGreaterThan(0);
    expect(new Set(unwraps.map((e) => e.callerObjectId))).toEqual(new Set(['ade0e5c0-d15c-4e0c-8000-00000000c0de']));
    expect(unwraps.map((e) => e.callerObjectId)).not.toContain(await f.bmsObjectId());
  });

  it('restore to blobs → the generated template through rsvault deployment group create → the VM reads the original bytes', async () => {
    const res = await restoreDisks({});
    const job: Job = await f.waitJob(RSV, (await f.opStatus(res)).properties!.jobId);
    expect(job.properties.status, JSON.stringify(job.properties.errorDetails)).toBe('Completed');
    const tpl = path.join(tmp, 'azuredeploy.json');
    const dl = await cli(cliEnv, 'storage', 'blob', 'download', '--url', job.properties.extendedInfo.propertyBag['Template Blob Uri']!, '-f', tpl);
    expect(dl.code, dl.stderr).toBe(0);
    const dep = await cli(cliEnv, 'deployment', 'group', 'create', '-g', RG, '--template-file', tpl, '--parameters', 'VirtualMachineName=vmtpl', '-o', 'json');
    expect(dep.code, dep.stderr + dep.stdout).toBe(0);
    await expectOriginalBytes('vmtpl');
  });

  it('restore as a new VM (AlternateLocation) → the VM reads the original bytes', async () => {
    const roles = await s.client.request<{ value: { id: string }[] }>('GET', `/subscriptions/${f.sub}/providers/Microsoft.Authorization/roleDefinitions`, { query: { 'api-version': '2022-04-01', $filter: "roleName eq 'Contributor'" } });
    await s.client.request('PUT', `${f.rgPath()}/providers/Microsoft.Authorization/roleAssignments/${randomBytes(16).toString('hex').replace(/(.{8})(.{4})(.{4})(.{4})(.{12})/, '$1-$2-$3-$4-$5')}`, { query: { 'api-version': '2022-04-01' }, body: { properties: { roleDefinitionId: roles.value[0]!.id, principalId: await f.bmsObjectId() } } });
    const ok = await cli(cliEnv, 'backup', 'restore', 'restore-vm', '-v', RSV, '-g', RG, '-c', VM, '-i', VM, '-r', rpId, '--storage-account', SA, '--target-resource-group', RG, '--target-vm-name', 'vmalt', '-o', 'json');
    expect(ok.code, ok.stderr).toBe(0);
    expect((ok.json as Job).properties.status).toBe('Completed');
    await expectOriginalBytes('vmalt');
  });
});

describe('az vm encryption show reports the real state (issue #13 item 6)', () => {
  const show = async (vm: string) => {
    const r = await az(['vm', 'encryption', 'show', '-g', RG, '-n', vm]);
    expect(r.code, r.err).toBe(0);
    return r.json as { osDisk?: string; dataDisk?: string; osType?: string; disks?: { name: string; statuses: { code: string }[] }[] };
  };
  /**
   * az prints one of two shapes: with VM-level settings (osDisk.encryptionSettings) the Linux extension's substatus
   * (`osDisk`/`dataDisk`), without them (single-pass, settings on the disks only) the instanceView disks'
   * `EncryptionState/*` statuses (OS disk first). Both are read from the disks' real state.
   */
  const states = (r: Awaited<ReturnType<typeof show>>) =>
    r.disks
      ? { os: r.disks[0]!.statuses.map((x) => x.code), data: r.disks.slice(1).map((d) => d.statuses.map((x) => x.code)) }
      : { os: r.osDisk, data: r.dataDisk };
  it('the original and the restored VMs: OS and data disks Encrypted', async () => {
    const legacy = { os: 'Encrypted', data: 'Encrypted' };
    const single = { os: ['EncryptionState/encrypted'], data: [['EncryptionState/encrypted']] };
    expect(states(await show(VM))).toEqual(legacy); // ADE enabled on it: settings on the VM too
    expect(states(await show('vmtpl'))).toEqual(legacy); // the template stamps the VM's osDisk.encryptionSettings
    expect(states(await show('vmalt'))).toEqual(legacy); // restore-vm as well
    expect(states(await show('vmcli'))).toEqual(single); // attached disks only: the settings live on the disks
  }, 120_000);

  it('a data disk left out of encryption is NotEncrypted; after DisableEncryption every disk reports EncryptionState/notEncrypted', async () => {
    await vmWithData('vmosonly');
    await encrypt('vmosonly', 'OS');
    expect(await show('vmosonly')).toMatchObject({ osDisk: 'Encrypted', dataDisk: 'NotEncrypted' });
    await encrypt('vmosonly', 'All', 'DisableEncryption');
    const off = await show('vmosonly');
    expect(off.disks!.map((d) => d.statuses.map((x) => x.code))).toEqual([['EncryptionState/notEncrypted'], ['EncryptionState/notEncrypted']]);
  }, 120_000);
});

describe('the platform may not open the disks → the start fails with an ADE error (issue #13 item 5)', () => {
  it('vault not enabled for disk encryption → KeyVaultNotEnabledForDiskEncryption on start and on create; the VM stays deallocated', async () => {
    expect((await power('vmcli', 'deallocate')).status).toBe('Succeeded');
    await s.client.request('PATCH', f.kvId(KV), { query: { 'api-version': KV_API }, body: { properties: { enabledForDiskEncryption: false } } });
    const st = await power('vmcli', 'start');
    expect(st.status).toBe('Failed');
    expect(st.error!.code).toBe('KeyVaultNotEnabledForDiskEncryption');
    expect(st.error!.message).toContain(KV);
    expect(JSON.stringify(st.error)).toMatch(new RegExp(`rsvault keyvault update -n ${KV} -g ${RG} --enabled-for-disk-encryption true`));
    const vm = await s.client.request<VmModel>('GET', f.vmId('vmcli'), { query: { ...q, $expand: 'instanceView' } });
    expect(vm.properties.instanceView!.statuses.map((x) => x.code)).toContain('PowerState/deallocated');
    // Creating a VM from restored disks fails the same way and leaves no VM.
    const ids = await restoredDiskIds();
    const put = await s.client.send('PUT', f.vmId('vmdenied'), { query: q, body: { location: 'local', properties: { hardwareProfile: { vmSize: 'Standard_DS1_v2' }, storageProfile: { osDisk: { osType: 'Linux', createOption: 'Attach', managedDisk: { id: ids.os } }, dataDisks: [] } } } });
    expect(put.status).toBe(400);
    expect((put.body as OpError).error!.code).toBe('KeyVaultNotEnabledForDiskEncryption');
    expect((await s.client.send('GET', f.vmId('vmdenied'), { query: q })).status).toBe(404);
    await s.client.request('PATCH', f.kvId(KV), { query: { 'api-version': KV_API }, body: { properties: { enabledForDiskEncryption: true } } });
  });

  it('BEK secret deleted → KeyVaultSecretDoesNotExist naming the secret; recovered → the VM starts', async () => {
    const d = await s.client.request<{ properties: { encryptionSettingsCollection: { encryptionSettings: { diskEncryptionKey: { secretUrl: string } }[] } } }>('GET', `${f.rgPath()}/providers/Microsoft.Compute/disks/${VM}-os`, { query: q });
    const secretUrl = d.properties.encryptionSettingsCollection.encryptionSettings[0]!.diskEncryptionKey.secretUrl;
    const name = secretUrl.split('/')[4]!;
    await f.kv(KV, 'DELETE', `/secrets/${name}`);
    const st = await power('vmcli', 'start');
    expect(st.status).toBe('Failed');
    expect(st.error!.code).toBe('KeyVaultSecretDoesNotExist');
    expect(st.error!.message).toContain(secretUrl);
    expect((await guestRead('vmcli', 'osDisk=true')).status).toBe(409);
    await f.kv(KV, 'POST', `/deletedsecrets/${name}/recover`);
    expect((await power('vmcli', 'start')).status).toBe('Succeeded');
    await expectOriginalBytes('vmcli');
  });
});
