/**
 * Restore failures and bad input against the real server: a restore hitting a full target (storage account quota)
 * and a restore killed midway end Failed with a code and leave no half-written disk; OriginalLocation for a plain VM;
 * bad input on every new endpoint (restore-keys, storage accounts, SAS, blobs, deployments) answers a code, writes
 * nothing, and the server stays up.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startTestServer, type TestServer } from './helpers/server.js';
import { Fixture, BK_API, MiB, env } from './recovery-fixture.js';
import { get, post } from './restore-helpers.js';

let s: TestServer;
let f: Fixture;
let dataDir: string;
const RG = 'rg-rfail';
const suffix = randomBytes(3).toString('hex');
const RSV = 'rsvfail';
const VM = 'vmplain';
const bk = { 'api-version': BK_API };
const ST = { 'api-version': '2023-01-01' };
const DEP = { 'api-version': '2021-04-01' };
let rpId: string;
let atBackup: Buffer;

const saId = (n: string) => `${f.rgPath()}/providers/Microsoft.Storage/storageAccounts/${n}`;
const rpPath = () => `${f.itemPath(RSV, VM)}/recoveryPoints/${rpId}`;
const restoreBody = (props: Record<string, unknown>) => ({ properties: { objectType: 'IaasVMRestoreRequest', recoveryPointId: rpId, ...props } });
async function errOf(p: Promise<{ status: number; body: unknown }>) {
  const r = await p;
  return { status: r.status, ...((r.body as { error?: { code: string; message: string } }).error ?? { code: '', message: '' }) };
}
async function guestDisk(): Promise<Buffer> {
  const r = await post(s, `${s.origin}${f.vmId(VM)}/guestIo/read?api-version=2022-08-01&osDisk=true&offset=0`, Buffer.alloc(0), await s.client.token());
  expect(r.status).toBe(200);
  return r.body;
}
const visible = (account: string) => readdirSync(path.join(dataDir, 'storage', account)).filter((x) => x !== '.staging');
const staged = (account: string) => (existsSync(path.join(dataDir, 'storage', account, '.staging')) ? readdirSync(path.join(dataDir, 'storage', account, '.staging')) : []);

beforeAll(async () => {
  dataDir = mkdtempSync(path.join(os.tmpdir(), 'rsv-rfail-'));
  s = await startTestServer({ env, dataDir });
  f = new Fixture(s, RG);
  await f.group();
  await f.vm(VM, 64 * MiB);
  await f.createVault(RSV);
  await f.opStatus(await f.enable(RSV, VM));
  const st = await f.opStatus(await f.backup(RSV, VM));
  const job = await f.waitJob(RSV, st.properties!.jobId);
  expect(job.properties.status).toBe('Completed');
  rpId = job.properties.extendedInfo.propertyBag['Recovery Point Id']!;
  atBackup = await guestDisk();
  for (const [n, quota] of [[`stfull${suffix}`, 4 * MiB], [`stbig${suffix}`, undefined]] as const) {
    await s.client.request('PUT', saId(n), { query: ST, body: { location: 'local', sku: { name: 'Standard_LRS' }, properties: quota ? { quotaBytes: quota } : {} } });
  }
}, 120_000);

afterAll(async () => {
  await s?.stop();
  if (f) rmSync(f.tmp, { recursive: true, force: true });
  rmSync(dataDir, { recursive: true, force: true });
});

describe('restore failures', () => {
  it('a full target (storage account quota) → Failed with UserErrorStorageAccountFull; nothing is left in the account', async () => {
    const acct = `stfull${suffix}`;
    const res = await s.client.send('POST', `${rpPath()}/restore`, { query: bk, body: restoreBody({ recoveryType: 'RestoreDisks', storageAccountId: saId(acct) }) });
    expect(res.status).toBe(202);
    const st = await f.opStatus(res);
    const job = await f.waitJob(RSV, st.properties!.jobId);
    expect(job.properties.status).toBe('Failed');
    expect(job.properties.errorDetails[0]).toMatchObject({ errorTitle: 'UserErrorStorageAccountFull', errorCode: 400316 });
    expect(job.properties.errorDetails[0]!.errorString).toMatch(new RegExp(acct));
    expect(job.properties.extendedInfo.propertyBag['Template Blob Uri']).toBeUndefined();
    expect(visible(acct)).toEqual([]);
    expect(staged(acct)).toEqual([]);
  });

  it('a restore killed midway → Failed with UserErrorRestoreInterrupted after restart; no half-written disk is presented', async () => {
    const acct = `stbig${suffix}`;
    const res = await s.client.send('POST', `${rpPath()}/restore`, { query: bk, body: restoreBody({ recoveryType: 'RestoreDisks', storageAccountId: saId(acct) }) });
    expect(res.status).toBe(202);
    const url = new URL(String(res.headers['azure-asyncoperation']));
    let jobId: string | undefined;
    for (let i = 0; i < 500 && !jobId; i++) {
      const stt = await s.client.request<{ properties: { jobId: string } | null }>('GET', url.pathname + url.search);
      jobId = stt.properties?.jobId;
    }
    expect(jobId).toBeDefined();
    // Kill while the disk image is being written (its .partial file exists in the staging container).
    const stagingDir = path.join(dataDir, 'storage', acct, '.staging');
    const partial = () => (existsSync(stagingDir) ? readdirSync(stagingDir).flatMap((c) => readdirSync(path.join(stagingDir, c))).some((x) => x.endsWith('.partial')) : false);
    for (let i = 0; i < 2000 && !partial(); i++) await new Promise((r) => setTimeout(r, 2));
    expect(partial()).toBe(true);
    const before = await f.job(RSV, jobId!);
    expect(before.properties.status).toBe('InProgress');
    await new Promise<void>((resolve) => {
      s.proc.once('exit', () => resolve());
      s.proc.kill('SIGKILL');
    });
    s.client.close();
    expect(partial()).toBe(true); // the kill left a half-written image behind…
    s = await startTestServer({ env, dataDir });
    f = new Fixture(s, RG);
    const job = await f.waitJob(RSV, jobId!);
    expect(job.properties.status).toBe('Failed');
    expect(job.properties.errorDetails[0]).toMatchObject({ errorTitle: 'UserErrorRestoreInterrupted', errorCode: 400323 });
    await new Promise((r) => setTimeout(r, 300)); // start-up cleanup runs beside the workers
    expect(visible(acct)).toEqual([]);
    expect(staged(acct)).toEqual([]);
    expect(existsSync(path.join(dataDir, 'restore-tmp'))).toBe(false);
  });

  it('OriginalLocation for a plain VM replaces its disk with the recovery point', async () => {
    await f.guestWrite(VM, 0, Buffer.from('WRITTEN-AFTER-THE-BACKUP'));
    expect((await guestDisk()).equals(atBackup)).toBe(false);
    const res = await s.client.send('POST', `${rpPath()}/restore`, { query: bk, body: restoreBody({ recoveryType: 'OriginalLocation' }) });
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    const job = await f.waitJob(RSV, (await f.opStatus(res)).properties!.jobId);
    expect(job.properties.status, JSON.stringify(job.properties.errorDetails)).toBe('Completed');
    expect((await guestDisk()).equals(atBackup)).toBe(true);
  });
});

describe('bad input on the new endpoints (a code, nothing written, alive)', () => {
  it('restore-keys', async () => {
    expect(await errOf(s.client.send('POST', `${rpPath()}/restoreKeys`, { query: bk, body: {} }))).toMatchObject({ status: 400, code: 'InvalidRequestContent' });
    expect(await errOf(s.client.send('POST', `${rpPath()}/restoreKeys`, { query: bk, body: { targetKeyVaultId: 'nosuchvault' } }))).toMatchObject({ status: 400, code: 'UserErrorRecoveryPointNotEncrypted' });
    expect(await errOf(s.client.send('POST', `${f.itemPath(RSV, VM)}/recoveryPoints/1/restoreKeys`, { query: bk, body: { targetKeyVaultId: 'x' } }))).toMatchObject({ status: 404, code: 'UserErrorRecoveryPointNotFound' });
  });

  it('storage accounts, SAS and blobs', async () => {
    expect(await errOf(s.client.send('PUT', saId('Bad_Name'), { query: ST, body: { location: 'local' } }))).toMatchObject({ status: 400, code: 'AccountNameInvalid' });
    expect(await errOf(s.client.send('PUT', saId(`stnoloc${suffix}`), { query: ST, body: {} }))).toMatchObject({ status: 400, code: 'InvalidRequestContent' });
    expect(await errOf(s.client.send('PUT', saId(`stq${suffix}`), { query: ST, body: { location: 'local', properties: { quotaBytes: 'lots' } } }))).toMatchObject({ status: 400, code: 'InvalidRequestContent' });
    expect(await errOf(s.client.send('PUT', saId(`stsku${suffix}`), { query: ST, body: { location: 'local', sku: { name: 'Gold' } } }))).toMatchObject({ status: 400, code: 'InvalidRequestContent' });
    expect(await errOf(s.client.send('GET', saId('nosuch'), { query: ST }))).toMatchObject({ status: 404, code: 'ResourceNotFound' });
    expect(await errOf(s.client.send('POST', `${saId(`stbig${suffix}`)}/listServiceSas`, { query: ST, body: { canonicalizedResource: '/blob/other/c1/b', signedPermission: 'r', signedExpiry: new Date(Date.now() + 60_000).toISOString() } }))).toMatchObject({ status: 400, code: 'InvalidRequestContent' });
    expect(await errOf(s.client.send('POST', `${saId(`stbig${suffix}`)}/listServiceSas`, { query: ST, body: { canonicalizedResource: `/blob/stbig${suffix}/c1/b`, signedPermission: 'r', signedExpiry: '2001-01-01T00:00:00Z' } }))).toMatchObject({ status: 400, code: 'InvalidRequestContent' });
    const list = await s.client.list<{ name: string }>(`${f.rgPath()}/providers/Microsoft.Storage/storageAccounts`, { query: ST });
    expect(list.map((a) => a.name).sort()).toEqual([`stbig${suffix}`, `stfull${suffix}`]);
    expect((await get(s, `${s.origin}/blob/stbig${suffix}/c1/x.json`)).status).toBe(401);
    expect((await get(s, `${s.origin}/blob/stbig${suffix}/c1/x.json`, await s.client.token())).status).toBe(404);
    expect((await get(s, `${s.origin}/blob/stbig${suffix}/c1/x.json?sv=1&sp=r&se=2099-01-01T00:00:00Z&sig=forged`)).status).toBe(403);
  });

  it('deployments: invalid templates are refused before anything is created; a failing resource fails the deployment with its error', async () => {
    const dep = (name: string, body: unknown) => s.client.send('PUT', `${f.rgPath()}/providers/Microsoft.Resources/deployments/${name}`, { query: DEP, body });
    const disk = { type: 'Microsoft.Compute/disks', apiVersion: '2022-08-01', name: "[parameters('n')]", location: 'local', properties: { creationData: { createOption: 'Empty' }, diskSizeGB: 1 } };
    const tpl = (resources: unknown[], parameters: Record<string, unknown> = { n: { type: 'string' } }) => ({ $schema: 'x', contentVersion: '1.0.0.0', parameters, resources });
    expect(await errOf(dep('d1', { nope: 1 }))).toMatchObject({ status: 400, code: 'InvalidRequestContent' });
    expect(await errOf(dep('d1', { properties: { mode: 'Complete', template: tpl([disk]) } }))).toMatchObject({ status: 400, code: 'InvalidRequestContent' });
    expect(await errOf(dep('d1', { properties: { template: tpl([disk]), templateLink: { uri: 'https://x/y' } } }))).toMatchObject({ status: 400, code: 'InvalidRequestContent' });
    expect(await errOf(dep('d1', { properties: { template: tpl([disk]) } }))).toMatchObject({ status: 400, code: 'InvalidTemplate', message: expect.stringMatching(/'n' is not provided/) });
    expect(await errOf(dep('d1', { properties: { template: tpl([{ ...disk, name: "[frobnicate('a')]" }]), parameters: { n: { value: 'a' } } } }))).toMatchObject({ status: 400, code: 'InvalidTemplate', message: expect.stringMatching(/frobnicate/) });
    expect(await errOf(dep('d1', { properties: { template: tpl([disk]), parameters: { extra: { value: 1 } } } }))).toMatchObject({ status: 400, code: 'InvalidTemplate' });
    expect(await errOf(dep('d1', { properties: { templateLink: { uri: 'https://example.com/t.json' } } }))).toMatchObject({ status: 400, code: 'InvalidTemplateLink' });
    expect((await s.client.send('GET', `${f.rgPath()}/providers/Microsoft.Resources/deployments/d1`, { query: DEP })).status).toBe(404);
    expect((await s.client.send('GET', `${f.rgPath()}/providers/Microsoft.Compute/disks/a`, { query: { 'api-version': '2022-08-01' } })).status).toBe(404);
    // A resource that fails: the disk deploys, the VM (attaching a missing disk) fails, the deployment is Failed with its error.
    const vm = { type: 'Microsoft.Compute/virtualMachines', apiVersion: '2022-08-01', name: 'vmbad', location: 'local', dependsOn: ["[resourceId('Microsoft.Compute/disks', parameters('n'))]"], properties: { hardwareProfile: { vmSize: 'Standard_DS1_v2' }, storageProfile: { osDisk: { osType: 'Linux', createOption: 'Attach', managedDisk: { id: "[resourceId('Microsoft.Compute/disks', 'missing')]" } } } } };
    const put = await dep('d2', { properties: { mode: 'Incremental', template: tpl([disk, vm]), parameters: { n: { value: 'depdisk' } } } });
    expect(put.status).toBe(201);
    await expect(s.client.waitForOperation(put, { intervalMs: 100 })).rejects.toMatchObject({ code: 'DeploymentFailed' });
    const d = await s.client.request<{ properties: { provisioningState: string; outputResources: { id: string }[]; error: { details: { code: string; target: string }[] } } }>('GET', `${f.rgPath()}/providers/Microsoft.Resources/deployments/d2`, { query: DEP });
    expect(d.properties.provisioningState).toBe('Failed');
    expect(d.properties.outputResources.map((r) => r.id.split('/').pop())).toEqual(['depdisk']);
    expect(d.properties.error.details).toEqual([expect.objectContaining({ code: 'NotFound', target: f.vmId('vmbad') })]);
    expect((await get(s, `${s.origin}/healthz`)).status).toBe(200);
  });
});
