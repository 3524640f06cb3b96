/**
 * Authorization across resource groups (issue #12, items 1 and 2), against the real server.
 *
 * 1. A principal with Contributor (or Backup Contributor) on rg1 only must not reach the data of a VM in rg2 through
 *    backup: protect rg2's VM into its own vault → back up → read keyAndSecret → restore the KEK into its own key
 *    vault → unwrap the BEK → restore the disk → read the guest's plaintext. The chain stops at its first step with
 *    403 AuthorizationFailed naming Microsoft.Compute/virtualMachines/write and the VM. On a recovery point an admin
 *    made, the same principal gets no keyAndSecret, cannot back up now, restore disks/VM or restore the keys.
 *    With Virtual Machine Contributor on the VM (or Contributor on rg2) the same flow works.
 * 2. Role assignments are only acted on at or below the URL's scope; the last subscription Owner cannot be removed.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startTestServer, type TestServer } from './helpers/server.js';
import { Fixture, BK_API, KV_API, RS_API, MiB, env, type Job, type OpStatus, type RecoveryPoint } from './recovery-fixture.js';
import { cli, get, qemuDecrypt } from './restore-helpers.js';
import type { ApiResponse, RsvaultClient } from '../src/client/index.js';

let s: TestServer;
let f1: Fixture; // rg1: the limited principals' own resource group
let f2: Fixture; // rg2: the victim VMs
let tmp: string;
const RG1 = 'rg-sec1';
const RG2 = 'rg-sec2';
const sfx = randomBytes(3).toString('hex');
const KV_VICTIM = `kvvic-${sfx}`;
const VM_A = 'vm-a'; // not protected by anyone: the attack chain's target
const VM_B = 'vm-b'; // protected and backed up by the admin in RSV_ADMIN (rg1)
const VM_C = 'vm-c'; // not encrypted, protected and backed up by the admin in RSV_ADMIN (original-location restores)
const RSV_ADMIN = 'rsv-admin';
const RSV_OPEN = 'rsv-open'; // an empty vault in rg1 the admin created (Backup Contributor cannot create vaults)
const bk = { 'api-version': BK_API };
const RA_API = { 'api-version': '2022-04-01' };
const ST = { 'api-version': '2023-01-01' };
let rpB: string; // the admin's recovery point of VM_B
let rpC: string; // the admin's recovery point of VM_C

const VM_WRITE = 'Microsoft.Compute/virtualMachines/write';
const VM_READ = 'Microsoft.Compute/virtualMachines/read';

interface Sp {
  id: string;
  appId: string;
  secret: string;
  c: RsvaultClient;
}
const sps: Sp[] = [];

const sub = () => s.creds.subscriptionId;
const rgPath = (rg: string) => `/subscriptions/${sub()}/resourceGroups/${rg}`;
const vmId = (vm: string, rg = RG2) => `${rgPath(rg)}/providers/Microsoft.Compute/virtualMachines/${vm}`;
const vaultPath = (vault: string, rg = RG1) => `${rgPath(rg)}/providers/Microsoft.RecoveryServices/vaults/${vault}`;
const itemPath = (vault: string, vm: string) => `${vaultPath(vault)}/backupFabrics/Azure/protectionContainers/IaasVMContainer;iaasvmcontainerv2;${RG2};${vm}/protectedItems/VM;iaasvmcontainerv2;${RG2};${vm}`;
const kvId = (name: string, rg = RG1) => `${rgPath(rg)}/providers/Microsoft.KeyVault/vaults/${name}`;
const saId = (name: string, rg = RG1) => `${rgPath(rg)}/providers/Microsoft.Storage/storageAccounts/${name}`;
const raPath = (scope: string, name: string) => `${scope}/providers/Microsoft.Authorization/roleAssignments/${name}`;
const errOf = (res: ApiResponse<unknown>) => (res.body as { error: { code: string; message: string } }).error;

async function newSp(name: string): Promise<Sp> {
  const sp = await s.client.request<{ id: string; appId: string; passwordCredentials: { secretText: string }[] }>('POST', '/v1.0/servicePrincipals', { body: { displayName: name } });
  const out = { id: sp.id, appId: sp.appId, secret: sp.passwordCredentials[0]!.secretText, c: s.clientFor(sp.appId, sp.passwordCredentials[0]!.secretText) };
  sps.push(out);
  return out;
}
async function assign(principalId: string, role: string, scope: string, name = randomUUID()): Promise<string> {
  await s.client.request('PUT', raPath(scope, name), { query: RA_API, body: { properties: { roleDefinitionId: role, principalId } } });
  return name;
}
function enable(c: RsvaultClient, vault: string, vm: string) {
  return c.send('PUT', itemPath(vault, vm), { query: bk, body: { properties: { protectedItemType: 'Microsoft.Compute/virtualMachines', sourceResourceId: vmId(vm), policyId: `${vaultPath(vault)}/backupPolicies/DefaultPolicy` } } });
}
function backupNow(c: RsvaultClient, vault: string, vm: string) {
  return c.send('POST', `${itemPath(vault, vm)}/backup`, { query: bk, body: { properties: { objectType: 'IaasVMBackupRequest' } } });
}
function restore(c: RsvaultClient, vault: string, vm: string, rp: string, props: Record<string, unknown>) {
  return c.send('POST', `${itemPath(vault, vm)}/recoveryPoints/${rp}/restore`, { query: bk, body: { properties: { objectType: 'IaasVMRestoreRequest', recoveryPointId: rp, ...props } } });
}
function restoreKeys(c: RsvaultClient, vault: string, vm: string, rp: string, targetKeyVaultId: string) {
  return c.send('POST', `${itemPath(vault, vm)}/recoveryPoints/${rp}/restoreKeys`, { query: bk, body: { targetKeyVaultId } });
}
async function opStatus(c: RsvaultClient, res: ApiResponse<unknown>): Promise<OpStatus> {
  const url = new URL(String(res.headers['azure-asyncoperation']));
  for (let i = 0; i < 1200; i++) {
    const st = await c.request<OpStatus>('GET', url.pathname + url.search);
    if (st.status !== 'InProgress') return st;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('operation did not finish');
}
async function waitJob(c: RsvaultClient, vault: string, id: string): Promise<Job> {
  for (let i = 0; i < 1200; i++) {
    const j = await c.request<Job>('GET', `${vaultPath(vault)}/backupJobs/${id}`, { query: bk });
    if (!['InProgress', 'Cancelling'].includes(j.properties.status)) return j;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`job ${id} did not finish`);
}
async function backupJob(c: RsvaultClient, vault: string, vm: string): Promise<Job> {
  const res = await backupNow(c, vault, vm);
  expect(res.status, JSON.stringify(res.body)).toBe(202);
  return waitJob(c, vault, (await opStatus(c, res)).properties!.jobId);
}
/** 403 AuthorizationFailed in Azure's shape, naming `action` over `scope` and the caller. */
function expectDenied(res: ApiResponse<unknown>, who: Sp, action: string, scope: string) {
  expect(res.status, JSON.stringify(res.body)).toBe(403);
  const e = errOf(res);
  expect(e.code).toBe('AuthorizationFailed');
  expect(e.message).toBe(`The client '${who.appId}' with object id '${who.id}' does not have authorization to perform action '${action}' over scope '${scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.`);
}
/** A key vault in rg1 where `who` holds every key and secret permission (what a Contributor of rg1 can make). */
async function ownKeyVault(who: Sp, name: string) {
  const res = await who.c.send('PUT', kvId(name), { query: { 'api-version': KV_API }, body: { location: 'local', properties: { tenantId: s.creds.tenantId, sku: { family: 'A', name: 'standard' }, accessPolicies: [{ tenantId: s.creds.tenantId, objectId: who.id, permissions: { keys: ['all'], secrets: ['all'] } }] } } });
  expect(res.status, JSON.stringify(res.body)).toBeLessThan(300);
}
async function ownStorageAccount(who: Sp, name: string, rg = RG1) {
  const res = await who.c.send('PUT', saId(name, rg), { query: ST, body: { location: 'local', sku: { name: 'Standard_LRS' }, kind: 'StorageV2' } });
  expect(res.status, JSON.stringify(res.body)).toBeLessThan(300);
}

beforeAll(async () => {
  s = await startTestServer({ env });
  tmp = mkdtempSync(path.join(os.tmpdir(), 'rsv-sec-'));
  f1 = new Fixture(s, RG1);
  f2 = new Fixture(s, RG2);
  await f1.group();
  await f2.group();
  // rg2: an encrypted VM the admin protects (B) and one nobody protects (A); the key vault grants the Backup
  // Management Service the "Azure Backup" template, as the README's flow does.
  await Promise.all([f2.keyVault(KV_VICTIM), f2.vm(VM_A, 4 * MiB), f2.vm(VM_B, 4 * MiB), f2.vm(VM_C, 4 * MiB)]);
  await f2.encrypt(VM_A, KV_VICTIM);
  await f2.encrypt(VM_B, KV_VICTIM);
  await f2.grantBackup(KV_VICTIM);
  await f2.guestWrite(VM_A, 4096, Buffer.from('SECRET-OF-RG2-VM-A'));
  await f2.guestWrite(VM_B, 4096, Buffer.from('SECRET-OF-RG2-VM-B'));
  // rg1: the admin's vault holding VM_B with one recovery point, and an empty one.
  expect((await f1.createVault(RSV_ADMIN)).status).toBe(201);
  expect((await f1.createVault(RSV_OPEN)).status).toBe(201);
  expect((await opStatus(s.client, await enable(s.client, RSV_ADMIN, VM_B))).status).toBe('Succeeded');
  const job = await backupJob(s.client, RSV_ADMIN, VM_B);
  expect(job.properties.status).toBe('Completed');
  rpB = job.properties.extendedInfo.propertyBag['Recovery Point Id']!;
  expect((await opStatus(s.client, await enable(s.client, RSV_ADMIN, VM_C))).status).toBe('Succeeded');
  const jc = await backupJob(s.client, RSV_ADMIN, VM_C);
  expect(jc.properties.status).toBe('Completed');
  rpC = jc.properties.extendedInfo.propertyBag['Recovery Point Id']!;
}, 180_000);

afterAll(async () => {
  for (const sp of sps) sp.c.close();
  await s?.stop();
  if (f1) rmSync(f1.tmp, { recursive: true, force: true });
  if (f2) rmSync(f2.tmp, { recursive: true, force: true });
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('item 1: backup cannot reach a VM of another resource group', () => {
  it('Contributor on rg1 only: the attack chain stops at its first step (protect rg2 VM into its own vault → 403), by API and by CLI', async () => {
    const evil = await newSp('sec-contrib-rg1');
    await assign(evil.id, 'Contributor', rgPath(RG1));
    const created = await evil.c.send('PUT', vaultPath('rsv-evil'), { query: { 'api-version': RS_API }, body: { location: 'local', sku: { name: 'Standard' }, properties: {} } });
    expect(created.status).toBe(201); // its own vault in its own group: allowed
    const res = await enable(evil.c, 'rsv-evil', VM_A);
    expectDenied(res, evil, VM_WRITE, vmId(VM_A));
    // nothing was registered: no item, no job
    expect((await s.client.send('GET', itemPath('rsv-evil', VM_A), { query: bk })).status).toBe(404);
    expect(await s.client.list(`${vaultPath('rsv-evil')}/backupJobs`, { query: bk })).toEqual([]);

    // The CLI path: the same API, the same answer as one ERROR line.
    const cfg = { RSVAULT_CONFIG_DIR: path.join(tmp, 'cfg-evil') };
    const login = await cli(cfg, 'login', '--server', s.origin, '--service-principal', '-u', evil.appId, '-p', evil.secret, '--tenant', s.creds.tenantId, '--ca-file', s.creds.caPath);
    expect(login.code, login.stderr).toBe(0);
    const r = await cli(cfg, 'backup', 'protection', 'enable-for-vm', '--vault-name', 'rsv-evil', '-g', RG1, '--vm', vmId(VM_A), '-p', 'DefaultPolicy');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^ERROR: \(AuthorizationFailed\) .*'Microsoft\.Compute\/virtualMachines\/write' over scope '[^']*\/resourceGroups\/rg-sec2\/providers\/Microsoft\.Compute\/virtualMachines\/vm-a'/m);
    expect((await s.client.send('GET', itemPath('rsv-evil', VM_A), { query: bk })).status).toBe(404);
  }, 60_000);

  it('Backup Contributor on rg1 only: cannot protect the rg2 VM into the vault it manages', async () => {
    const bc = await newSp('sec-backupcontrib-rg1');
    await assign(bc.id, 'Backup Contributor', rgPath(RG1));
    expectDenied(await enable(bc.c, RSV_OPEN, VM_A), bc, VM_WRITE, vmId(VM_A));
    expect((await s.client.send('GET', itemPath(RSV_OPEN, VM_A), { query: bk })).status).toBe(404);
  });

  it('on a recovery point the admin made: no keyAndSecret, no backup now, no restore of disks / VM / keys into its own resources', async () => {
    const evil = await newSp('sec-contrib-rg1-b');
    await assign(evil.id, 'Contributor', rgPath(RG1));
    const kv = `kvevil-${sfx}`;
    const sa = `stevil${sfx}`;
    await ownKeyVault(evil, kv);
    await ownStorageAccount(evil, sa);

    // It may read the vault (Contributor on rg1) and see the recovery point, but not the KEK/BEK backup data.
    const rp = await evil.c.request<RecoveryPoint>('GET', `${itemPath(RSV_ADMIN, VM_B)}/recoveryPoints/${rpB}`, { query: bk });
    expect(rp.properties.isSourceVMEncrypted).toBe(true);
    expect(rp.properties.keyAndSecret).toBeUndefined();
    expect(JSON.stringify(rp)).not.toMatch(/keyBackupData|secretData/);
    // The admin (who may read the VM) still gets it.
    const adminRp = await s.client.request<RecoveryPoint>('GET', `${itemPath(RSV_ADMIN, VM_B)}/recoveryPoints/${rpB}`, { query: bk });
    expect(adminRp.properties.keyAndSecret!.kekDetails!.keyBackupData.length).toBeGreaterThan(100);

    expectDenied(await backupNow(evil.c, RSV_ADMIN, VM_B), evil, VM_WRITE, vmId(VM_B));
    expectDenied(await restoreKeys(evil.c, RSV_ADMIN, VM_B, rpB, kvId(kv)), evil, VM_READ, vmId(VM_B));
    expectDenied(await restore(evil.c, RSV_ADMIN, VM_B, rpB, { recoveryType: 'RestoreDisks', storageAccountId: saId(sa) }), evil, VM_WRITE, vmId(VM_B));
    expectDenied(await restore(evil.c, RSV_ADMIN, VM_B, rpB, { recoveryType: 'RestoreDisks', storageAccountId: saId(sa), targetResourceGroupId: rgPath(RG1) }), evil, VM_WRITE, vmId(VM_B));
    expectDenied(await restore(evil.c, RSV_ADMIN, VM_B, rpB, { recoveryType: 'AlternateLocation', storageAccountId: saId(sa), targetResourceGroupId: rgPath(RG1), targetVirtualMachineId: vmId('vm-stolen', RG1) }), evil, VM_WRITE, vmId(VM_B));
    expectDenied(await restore(evil.c, RSV_ADMIN, VM_B, rpB, { recoveryType: 'OriginalLocation' }), evil, VM_WRITE, vmId(VM_B));

    // Nothing landed in its key vault or storage account, and no job ran for it.
    const keys = await evil.c.request<{ value: unknown[] }>('GET', '/keys', { baseUrl: `https://${kv}.vault.localhost:${s.port}`, resource: 'https://vault.localhost', query: { 'api-version': '7.4' } });
    expect(keys.value).toEqual([]);
    expect(readdirSync(path.join(s.dataDir, 'storage', sa)).filter((x) => x !== '.staging')).toEqual([]);
    const jobs = await s.client.list<Job>(`${vaultPath(RSV_ADMIN)}/backupJobs`, { query: bk });
    expect(jobs.filter((j) => j.properties.operation === 'Restore')).toEqual([]);
    expect(jobs.filter((j) => j.properties.operation === 'Backup' && j.properties.entityFriendlyName === VM_B)).toHaveLength(1);
  }, 60_000);

  it('restore checks the targets too: write on the VM alone does not let a restore write into a storage account or group it cannot write', async () => {
    const vmc = await newSp('sec-vmc-only');
    await assign(vmc.id, 'Virtual Machine Contributor', vmId(VM_B));
    await assign(vmc.id, 'Backup Operator', vaultPath(RSV_ADMIN));
    const otherSa = `stother${sfx}`;
    await s.client.request('PUT', saId(otherSa), { query: ST, body: { location: 'local', sku: { name: 'Standard_LRS' }, kind: 'StorageV2' } });
    expectDenied(await restore(vmc.c, RSV_ADMIN, VM_B, rpB, { recoveryType: 'RestoreDisks', storageAccountId: saId(otherSa) }), vmc, 'Microsoft.Storage/storageAccounts/write', saId(otherSa));
    await assign(vmc.id, 'Contributor', saId(otherSa));
    expectDenied(await restore(vmc.c, RSV_ADMIN, VM_B, rpB, { recoveryType: 'RestoreDisks', storageAccountId: saId(otherSa), targetResourceGroupId: rgPath(RG1) }), vmc, 'Microsoft.Resources/subscriptions/resourceGroups/write', rgPath(RG1));
    expectDenied(await restore(vmc.c, RSV_ADMIN, VM_B, rpB, { recoveryType: 'AlternateLocation', storageAccountId: saId(otherSa), targetVirtualMachineId: vmId('vm-x', RG1) }), vmc, 'Microsoft.Resources/subscriptions/resourceGroups/write', rgPath(RG1));
    // Original location replaces the VM's disks: write on the VM is not write on its disks (separate resources).
    await assign(vmc.id, 'Virtual Machine Contributor', vmId(VM_C));
    const diskC = `${rgPath(RG2)}/providers/Microsoft.Compute/disks/${VM_C}-os`;
    expectDenied(await restore(vmc.c, RSV_ADMIN, VM_C, rpC, { recoveryType: 'OriginalLocation' }), vmc, 'Microsoft.Compute/disks/write', diskC);
    const jobs = await s.client.list<Job>(`${vaultPath(RSV_ADMIN)}/backupJobs`, { query: bk });
    expect(jobs.filter((j) => j.properties.operation === 'Restore')).toEqual([]);
  });

  it('with Virtual Machine Contributor on the VM (+ Contributor on rg1) the whole flow works: protect, back up, keyAndSecret, restore keys, restore disks', async () => {
    const ok = await newSp('sec-vmc-and-rg1');
    await assign(ok.id, 'Contributor', rgPath(RG1));
    await assign(ok.id, 'Virtual Machine Contributor', vmId(VM_A));
    const kv = `kvok-${sfx}`;
    const sa = `stok${sfx}`;
    await ownKeyVault(ok, kv);
    await ownStorageAccount(ok, sa);
    expect((await ok.c.send('PUT', vaultPath('rsv-ok'), { query: { 'api-version': RS_API }, body: { location: 'local', sku: { name: 'Standard' }, properties: {} } })).status).toBe(201);
    const st = await opStatus(ok.c, await enable(ok.c, 'rsv-ok', VM_A));
    expect(st.status, JSON.stringify(st.error)).toBe('Succeeded');
    const job = await backupJob(ok.c, 'rsv-ok', VM_A);
    expect(job.properties.status, JSON.stringify(job.properties.errorDetails)).toBe('Completed');
    const rp = job.properties.extendedInfo.propertyBag['Recovery Point Id']!;
    const point = await ok.c.request<RecoveryPoint>('GET', `${itemPath('rsv-ok', VM_A)}/recoveryPoints/${rp}`, { query: bk });
    expect(point.properties.keyAndSecret!.kekDetails!.keyBackupData.length).toBeGreaterThan(100);
    const keys = await restoreKeys(ok.c, 'rsv-ok', VM_A, rp, kvId(kv));
    expect(keys.status, JSON.stringify(keys.body)).toBe(200);
    expect((keys.body as { secretUrl: string }).secretUrl).toMatch(new RegExp(`^https://${kv}\\.vault\\.localhost:${s.port}/secrets/`));
    const r = await restore(ok.c, 'rsv-ok', VM_A, rp, { recoveryType: 'RestoreDisks', storageAccountId: saId(sa) });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const rj = await waitJob(ok.c, 'rsv-ok', (await opStatus(ok.c, r)).properties!.jobId);
    expect(rj.properties.status, JSON.stringify(rj.properties.errorDetails)).toBe('Completed');
    const hostUri = new URL(rj.properties.extendedInfo.propertyBag['OS Disk Blob Uri']!);
    expect(hostUri.hostname).toBe(`${sa}.blob.localhost`);
    // The older path form of the same blob takes an ARM token (the host form wants a storage.azure.com one).
    const blobUri = `${s.origin}/blob/${sa}${hostUri.pathname}`;
    // …and it ends where the attack chain would have: the restored disk decrypts to the guest's plaintext with the
    // BEK it unwraps in its own key vault. That is what the VM rights above are the price of.
    const { keyUrl, secretUrl } = keys.body as { keyUrl: string; secretUrl: string };
    const vaultOf = { baseUrl: `https://${kv}.vault.localhost:${s.port}`, resource: 'https://vault.localhost', query: { 'api-version': '7.4' } };
    const secret = await ok.c.request<{ value: string }>('GET', new URL(secretUrl).pathname, vaultOf);
    const unwrapped = await ok.c.request<{ value: string }>('POST', `${new URL(keyUrl).pathname}/unwrapkey`, { ...vaultOf, body: { alg: 'RSA-OAEP', value: secret.value } });
    const disk = await get(s, blobUri, await ok.c.token());
    expect(disk.status).toBe(200);
    const img = path.join(tmp, 'ok-os.img');
    writeFileSync(img, disk.body);
    const plain = qemuDecrypt(img, Buffer.from(unwrapped.value, 'base64url'), tmp);
    expect(plain.includes(Buffer.from('SECRET-OF-RG2-VM-A'))).toBe(true);
  }, 120_000);

  it('with Contributor on rg2 + Backup Contributor on rg1: protect into the vault it manages and back up now', async () => {
    const ok = await newSp('sec-bc-and-rg2');
    await assign(ok.id, 'Backup Contributor', rgPath(RG1));
    await assign(ok.id, 'Contributor', rgPath(RG2));
    // VM_A is held by rsv-ok now (the test above), and a VM is protected by one vault at a time: a fresh encrypted VM.
    const held = await enable(ok.c, RSV_OPEN, VM_A);
    expect(held.status, JSON.stringify(held.body)).toBe(409);
    expect(errOf(held).code).toBe('UserErrorVmAlreadyProtectedInAnotherVault');
    const VM_D = 'vm-d';
    await f2.vm(VM_D, 4 * MiB);
    await f2.encrypt(VM_D, KV_VICTIM);
    const st = await opStatus(ok.c, await enable(ok.c, RSV_OPEN, VM_D));
    expect(st.status, JSON.stringify(st.error)).toBe('Succeeded');
    const job = await backupJob(ok.c, RSV_OPEN, VM_D);
    expect(job.properties.status, JSON.stringify(job.properties.errorDetails)).toBe('Completed');
    const rp = await ok.c.request<RecoveryPoint>('GET', `${itemPath(RSV_OPEN, VM_D)}/recoveryPoints/${job.properties.extendedInfo.propertyBag['Recovery Point Id']}`, { query: bk });
    expect(rp.properties.keyAndSecret!.bekDetails.secretData.length).toBeGreaterThan(10);
  }, 120_000);
});

describe('item 2: role assignments outside the URL scope', () => {
  let owner2: Sp;
  let adminRa: string; // the bootstrap admin's Owner assignment on the subscription
  beforeAll(async () => {
    owner2 = await newSp('sec-owner-rg2');
    await assign(owner2.id, 'Owner', rgPath(RG2));
    const list = await s.client.list<{ name: string; properties: { scope: string; principalId: string } }>(`/subscriptions/${sub()}/providers/Microsoft.Authorization/roleAssignments`, { query: { ...RA_API, $filter: `principalId eq '${s.creds.objectId}'` } });
    adminRa = list.find((a) => a.properties.scope === `/subscriptions/${sub()}`)!.name;
  });
  const adminRaExists = async () => (await s.client.send('GET', raPath(`/subscriptions/${sub()}`, adminRa), { query: RA_API })).status === 200;

  it("an Owner of rg2 can neither GET nor DELETE nor overwrite the subscription Owner's assignment through rg2's URL", async () => {
    const url = raPath(rgPath(RG2), adminRa);
    const got = await owner2.c.send('GET', url, { query: RA_API });
    expect(got.status).toBe(404);
    expect(errOf(got).code).toBe('RoleAssignmentNotFound');
    const del = await owner2.c.send('DELETE', url, { query: RA_API });
    expect(del.status, JSON.stringify(del.body)).toBe(204); // as Azure answers a DELETE of an assignment that is not there
    expect(await adminRaExists()).toBe(true);
    const put = await owner2.c.send('PUT', url, { query: RA_API, body: { properties: { roleDefinitionId: 'Reader', principalId: owner2.id } } });
    expect(put.status, JSON.stringify(put.body)).toBe(400);
    expect(errOf(put).code).toBe('RoleAssignmentUpdateNotPermitted');
    expect(await adminRaExists()).toBe(true);
    // The root (no scope) form is not a way around it either.
    expect((await owner2.c.send('GET', `/providers/Microsoft.Authorization/roleAssignments/${adminRa}`, { query: RA_API })).status).toBe(403);
    expect((await owner2.c.send('DELETE', `/providers/Microsoft.Authorization/roleAssignments/${adminRa}`, { query: RA_API })).status).toBe(403);
    expect(await adminRaExists()).toBe(true);
    // A scope with dot segments is refused, not resolved.
    const dots = await owner2.c.send('PUT', `${rgPath(RG2)}%2F..%2F../providers/Microsoft.Authorization/roleAssignments/${randomUUID()}`, { query: RA_API, body: { properties: { roleDefinitionId: 'Owner', principalId: owner2.id } } });
    expect(dots.status, JSON.stringify(dots.body)).toBeGreaterThanOrEqual(400);
    const mine = await s.client.list<{ properties: { scope: string } }>(`/subscriptions/${sub()}/providers/Microsoft.Authorization/roleAssignments`, { query: { ...RA_API, $filter: `principalId eq '${owner2.id}'` } });
    expect(mine.map((a) => a.properties.scope)).toEqual([rgPath(RG2)]);
  });

  it('at or below the URL scope still works: an Owner of rg2 reads, and removes, an assignment on a VM in rg2', async () => {
    const other = await newSp('sec-vm-reader');
    const name = await assign(other.id, 'Reader', vmId(VM_A));
    const got = await owner2.c.request<{ name: string; properties: { scope: string } }>('GET', raPath(rgPath(RG2), name), { query: RA_API });
    expect(got.properties.scope).toBe(vmId(VM_A));
    const del = await owner2.c.send('DELETE', raPath(rgPath(RG2), name), { query: RA_API });
    expect(del.status).toBe(200);
    expect((await s.client.send('GET', raPath(vmId(VM_A), name), { query: RA_API })).status).toBe(404);
    // and the by-id form at the assignment's own scope
    const n2 = await assign(other.id, 'Reader', vmId(VM_A));
    expect((await owner2.c.send('GET', raPath(vmId(VM_A), n2), { query: RA_API })).status).toBe(200);
    expect((await owner2.c.send('DELETE', raPath(vmId(VM_A), n2), { query: RA_API })).status).toBe(200);
  });

  it('the last Owner of the subscription cannot be removed (LastOwnerCannotBeRemoved), by its assignment or by deleting its principal', async () => {
    const del = await s.client.send('DELETE', raPath(`/subscriptions/${sub()}`, adminRa), { query: RA_API });
    expect(del.status, JSON.stringify(del.body)).toBe(409);
    expect(errOf(del).code).toBe('LastOwnerCannotBeRemoved');
    expect(await adminRaExists()).toBe(true);
    // With a second Owner, one of them may go.
    const second = await newSp('sec-second-owner');
    const secondRa = await assign(second.id, 'Owner', `/subscriptions/${sub()}`);
    const cli2 = await second.c.send('DELETE', raPath(`/subscriptions/${sub()}`, adminRa), { query: RA_API });
    expect(cli2.status, JSON.stringify(cli2.body)).toBe(200);
    // Now `second` is the last Owner: neither its assignment nor its principal can be removed.
    const selfDel = await second.c.send('DELETE', raPath(`/subscriptions/${sub()}`, secondRa), { query: RA_API });
    expect(selfDel.status).toBe(409);
    expect(errOf(selfDel).code).toBe('LastOwnerCannotBeRemoved');
    const spDel = await second.c.send('DELETE', `/v1.0/servicePrincipals/${second.id}`);
    expect(spDel.status, JSON.stringify(spDel.body)).toBe(409);
    expect(errOf(spDel).code).toBe('LastOwnerCannotBeRemoved');
    expect((await second.c.send('GET', raPath(`/subscriptions/${sub()}`, secondRa), { query: RA_API })).status).toBe(200);
    // Give the admin its Owner back (the server's credentials.json names it).
    const back = await second.c.send('PUT', raPath(`/subscriptions/${sub()}`, randomUUID()), { query: RA_API, body: { properties: { roleDefinitionId: 'Owner', principalId: s.creds.objectId } } });
    expect(back.status).toBe(201);
  });
});
