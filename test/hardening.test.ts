/**
 * Hardening against the real server binary: disk imports from a blob URL are authorized for the caller (RBAC read on
 * the storage account or a SAS; directly and through a template deployment); a SIGKILL in the middle of an Azure
 * Disk Encryption conversion leaves the disk in its pre-conversion state, the extension Failed and no temp file;
 * planted conversion / snapshot leftovers are settled at start-up; the server runs with a 16-thread libuv pool.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import https from 'node:https';
import { existsSync, linkSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes, randomUUID } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { startTestServer, type TestServer } from './helpers/server.js';
import type { RsvaultClient } from '../src/client/index.js';

const API = '2022-08-01';
const ST = { 'api-version': '2023-01-01' };
const RG_API = { 'api-version': '2021-04-01' };
const AUTH = { 'api-version': '2022-04-01' };
const q = { 'api-version': API };
const MiB = 1024 * 1024;
const env = { RSVAULT_LUKS_ITERATIONS: '1000' };
const suffix = randomBytes(3).toString('hex');
const ACCT = `sthard${suffix}`;
const KV = `kvhard-${suffix}`;

let s: TestServer;
let sub: string;
let tmp: string;
let dataDir: string;

const rg = (name: string) => `/subscriptions/${sub}/resourceGroups/${name}`;
const diskPath = (g: string, n: string) => `${rg(g)}/providers/Microsoft.Compute/disks/${n}`;
const vmPath = (n: string) => `${rg('rg-hvm')}/providers/Microsoft.Compute/virtualMachines/${n}`;
type Disk = { properties: { creationData: { sourceUri?: string }; encryptionSettingsCollection?: unknown; rsvault: { imagePath: string; imageFormat: string } } };
type ApiErr = { status: number; code: string; message: string };

async function errOf(p: Promise<unknown>): Promise<ApiErr> {
  const e = (await p.then(() => undefined, (x: unknown) => x)) as ApiErr | undefined;
  if (!e) throw new Error('expected an error');
  return e;
}

function rawReq(method: string, url: string, token: string, body?: Buffer): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method, ca: s.ca, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/octet-stream' } : {}) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

async function principal(name: string): Promise<{ id: string; client: RsvaultClient }> {
  const sp = await s.client.request<{ id: string; appId: string; passwordCredentials: { secretText: string }[] }>('POST', '/v1.0/servicePrincipals', { body: { displayName: name } });
  return { id: sp.id, client: s.clientFor(sp.appId, sp.passwordCredentials[0]!.secretText) };
}

async function assignRole(principalId: string, role: string, scope: string): Promise<void> {
  const roles = await s.client.request<{ value: { id: string }[] }>('GET', `/subscriptions/${sub}/providers/Microsoft.Authorization/roleDefinitions`, { query: { ...AUTH, $filter: `roleName eq '${role}'` } });
  await s.client.request('PUT', `${scope}/providers/Microsoft.Authorization/roleAssignments/${randomUUID()}`, { query: AUTH, body: { properties: { roleDefinitionId: roles.value[0]!.id, principalId } } });
}

const listLeftovers = (dir: string) => readdirSync(dir).filter((n) => /\.convert-|\.snap-/.test(n));

beforeAll(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'hardening-test-'));
  dataDir = path.join(tmp, 'data');
  s = await startTestServer({ dataDir, env });
  sub = s.creds.subscriptionId;
  for (const g of ['rg-hdisks', 'rg-hstore', 'rg-hvm']) await s.client.request('PUT', rg(g), { query: RG_API, body: { location: 'local' } });
}, 60_000);

afterAll(async () => {
  if (process.env.DEBUG_HARDENING) console.log(s?.output());
  await s?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

describe('disk import from a blob URL is authorized for the caller', () => {
  it('disk write alone is not enough: 403 AuthorizationFailed and nothing created (direct, by file path, and in a deployment); with a SAS or read on the account it works', async () => {
    await s.client.request('PUT', `${rg('rg-hstore')}/providers/Microsoft.Storage/storageAccounts/${ACCT}`, { query: ST, body: { location: 'local', sku: { name: 'Standard_LRS' }, kind: 'StorageV2' } });
    const content = randomBytes(MiB);
    const blobFile = path.join(dataDir, 'storage', ACCT, 'cont1', 'disk.img');
    mkdirSync(path.dirname(blobFile), { recursive: true });
    writeFileSync(blobFile, content);
    const blobUrl = `${s.origin}/blob/${ACCT}/cont1/disk.img`;

    // Contributor on the disks' group only: may write disks there, may not read the account in another group.
    const { id, client: importer } = await principal('hardening-importer');
    await assignRole(id, 'Contributor', rg('rg-hdisks'));
    const put = (name: string, sourceUri: string) => importer.request<Disk>('PUT', diskPath('rg-hdisks', name), { query: q, body: { location: 'local', properties: { creationData: { createOption: 'Import', sourceUri } } } });
    const exists = async (name: string) => (await s.client.send('GET', diskPath('rg-hdisks', name), { query: q })).status === 200;

    expect(await errOf(put('stolen1', blobUrl))).toMatchObject({ status: 403, code: 'AuthorizationFailed', message: expect.stringContaining('blobs/read') });
    expect(await exists('stolen1')).toBe(false);
    // The same blob by its server path (or any file under the data directory) is refused too.
    expect(await errOf(put('stolen2', blobFile))).toMatchObject({ status: 403, code: 'ImportPathNotAllowed' });
    expect(await errOf(put('stolen3', `file://${path.join(dataDir, 'credentials.json')}`))).toMatchObject({ status: 403, code: 'ImportPathNotAllowed' });
    // Any server file outside the import directories (RSVAULT_IMPORT_DIRS; the tests allow the system temp dir) too.
    const outside = mkdtempSync(path.join('/var/tmp', 'rsv-outside-'));
    try {
      writeFileSync(path.join(outside, 'x.img'), Buffer.alloc(4096, 1));
      expect(await errOf(put('stolen4', path.join(outside, 'x.img')))).toMatchObject({ status: 403, code: 'ImportPathNotAllowed', message: expect.stringContaining('import directory') });
    } finally {
      rmSync(outside, { recursive: true, force: true });
    }
    expect(await errOf(put('stolen4', `${blobUrl}?sv=2021-08-06&sr=b&sp=r&se=2099-01-01T00:00:00Z&sig=forged`))).toMatchObject({ status: 403, code: 'AuthenticationFailed' });
    for (const n of ['stolen2', 'stolen3', 'stolen4']) expect(await exists(n)).toBe(false);

    // A template deployment creates the disk through the disk route with the deploying principal's token.
    const DEP = { 'api-version': '2021-04-01' };
    const template = (name: string, uri: string) => ({
      properties: {
        mode: 'Incremental',
        template: { $schema: 'x', contentVersion: '1.0.0.0', resources: [{ type: 'Microsoft.Compute/disks', apiVersion: API, name, location: 'local', properties: { creationData: { createOption: 'Import', sourceUri: uri } } }] },
      },
    });
    const dep = await importer.send('PUT', `${rg('rg-hdisks')}/providers/Microsoft.Resources/deployments/dep1`, { query: DEP, body: template('stolen5', blobUrl) });
    expect(dep.status).toBe(201);
    await expect(importer.waitForOperation(dep, { intervalMs: 100 })).rejects.toMatchObject({ code: 'DeploymentFailed' });
    const d1 = await s.client.request<{ properties: { error: { details: { code: string }[] } } }>('GET', `${rg('rg-hdisks')}/providers/Microsoft.Resources/deployments/dep1`, { query: DEP });
    expect(d1.properties.error.details).toEqual([expect.objectContaining({ code: 'AuthorizationFailed' })]);
    expect(await exists('stolen5')).toBe(false);

    // With a read SAS in the URL: allowed; the SAS signature is not kept on the disk.
    const sas = await s.client.request<{ serviceSasToken: string }>('POST', `${rg('rg-hstore')}/providers/Microsoft.Storage/storageAccounts/${ACCT}/listServiceSas`, {
      query: ST, body: { canonicalizedResource: `/blob/${ACCT}/cont1/disk.img`, signedResource: 'b', signedPermission: 'r', signedExpiry: new Date(Date.now() + 3_600_000).toISOString() },
    });
    const viaSas = await put('withsas', `${blobUrl}?${sas.serviceSasToken}`);
    expect(readFileSync(viaSas.properties.rsvault.imagePath).equals(content)).toBe(true);
    expect(viaSas.properties.creationData.sourceUri).toBe(blobUrl);
    expect(JSON.stringify(await s.client.request('GET', diskPath('rg-hdisks', 'withsas'), { query: q }))).not.toContain('sig=');

    // With read access on the account (Reader): allowed, directly and through a deployment.
    await assignRole(id, 'Reader', `${rg('rg-hstore')}/providers/Microsoft.Storage/storageAccounts/${ACCT}`);
    const viaRbac = await put('withread', blobUrl);
    expect(readFileSync(viaRbac.properties.rsvault.imagePath).equals(content)).toBe(true);
    const dep2 = await importer.send('PUT', `${rg('rg-hdisks')}/providers/Microsoft.Resources/deployments/dep2`, { query: DEP, body: template('viadep', blobUrl) });
    await importer.waitForOperation(dep2, { intervalMs: 100 });
    expect(await exists('viadep')).toBe(true);
    // Still no server files by path.
    expect(await errOf(put('stolen6', blobFile))).toMatchObject({ status: 403, code: 'ImportPathNotAllowed' });
    importer.close();
  }, 30_000);
});

describe('crash recovery at start-up', () => {
  it('SIGKILL during an ADE conversion: temp file removed, extension Failed, disk raw with its original bytes and usable; planted swap / snapshot leftovers settled', async () => {
    // A Linux VM whose OS disk is 48 MiB: random first MiB, a marker at 40 MiB, zeros elsewhere.
    const original = Buffer.alloc(48 * MiB);
    randomBytes(MiB).copy(original);
    Buffer.from('marker-before-encryption').copy(original, 40 * MiB);
    writeFileSync(path.join(tmp, 'os.raw'), original);
    const osDisk = await s.client.request<Disk>('PUT', diskPath('rg-hvm', 'hos'), { query: q, body: { location: 'local', properties: { creationData: { createOption: 'Import', sourceUri: path.join(tmp, 'os.raw') } } } });
    const image = osDisk.properties.rsvault.imagePath;
    const disksDir = path.dirname(image);
    await s.client.request('PUT', vmPath('hvm'), {
      query: q,
      body: { location: 'local', properties: { hardwareProfile: { vmSize: 'Standard_DS1_v2' }, osProfile: { computerName: 'hvm', adminUsername: 'u', linuxConfiguration: {} }, storageProfile: { osDisk: { osType: 'Linux', createOption: 'Attach', managedDisk: { id: diskPath('rg-hvm', 'hos') } } } } },
    });
    const vaultId = `${rg('rg-hvm')}/providers/Microsoft.KeyVault/vaults/${KV}`;
    await s.client.request('PUT', vaultId, {
      query: { 'api-version': '2023-07-01' },
      body: { location: 'local', properties: { tenantId: s.creds.tenantId, sku: { family: 'A', name: 'standard' }, enabledForDiskEncryption: true, accessPolicies: [{ tenantId: s.creds.tenantId, objectId: s.creds.objectId, permissions: { keys: ['all'], secrets: ['all'] } }] } },
    });
    const extPath = `${vmPath('hvm')}/extensions/AzureDiskEncryptionForLinux`;
    const ade = () => s.client.send('PUT', extPath, { query: q, body: { location: 'local', properties: { publisher: 'Microsoft.Azure.Security', type: 'AzureDiskEncryptionForLinux', typeHandlerVersion: '1.1', settings: { EncryptionOperation: 'EnableEncryption', KeyVaultURL: `https://${KV}.vault.localhost:${s.port}`, KeyVaultResourceId: vaultId, VolumeType: 'OS' } } } });

    // Two more disks for planted leftovers, and an unrelated file that must survive.
    const d2 = await s.client.request<Disk>('PUT', diskPath('rg-hvm', 'hd2'), { query: q, body: { location: 'local', properties: { creationData: { createOption: 'Import', sourceUri: path.join(tmp, 'os.raw') } } } });
    const d3 = await s.client.request<Disk>('PUT', diskPath('rg-hvm', 'hd3'), { query: q, body: { location: 'local', properties: { creationData: { createOption: 'Empty' }, diskSizeGB: 1 } } });

    // Start the conversion; kill the server while its temp file is being written.
    const res = await ade();
    expect(res.status).toBe(201);
    const t0 = Date.now();
    let seen: string[] = [];
    while (Date.now() - t0 < 20_000) {
      seen = readdirSync(disksDir).filter((n) => n.startsWith(`${path.basename(image)}.convert-`));
      if (seen.length) break;
      await new Promise((r) => setTimeout(r, 2));
    }
    expect(seen.length, 'the conversion temp file appeared').toBe(1);
    s.proc.kill('SIGKILL');
    await new Promise((r) => s.proc.once('exit', r));
    s.client.close();
    expect(existsSync(path.join(disksDir, seen[0]!))).toBe(true);

    // Plant: hd2 crashed after the swap but before the commit (new bytes in place, original kept as .orig-raw);
    // hd3 crashed after a committed decrypt (original LUKS kept); snapshot side files of an interrupted backup.
    const i2 = d2.properties.rsvault.imagePath;
    const i3 = d3.properties.rsvault.imagePath;
    linkSync(i2, `${i2}.convert-4242-abcd1234.orig-raw`);
    writeFileSync(`${i2}.new`, randomBytes(MiB));
    renameSync(`${i2}.new`, i2);
    writeFileSync(`${i3}.convert-4243-beef0000.orig-luks1`, 'old luks image');
    writeFileSync(`${i3}.convert-4244-0123abcd`, 'half-written image');
    writeFileSync(`${image}.snap-0123456789ab`, 'reflink clone');
    writeFileSync(`${i2}.snap-ba9876543210.cow`, 'cow side file');
    writeFileSync(`${i2}.snap-notes.txt`, 'not ours');

    s = await startTestServer({ dataDir, env });
    // Start-up settled the conversion leftovers before serving; snapshot files go with the worker's start-up.
    const t1 = Date.now();
    while (listLeftovers(disksDir).some((n) => /\.snap-[0-9a-f]{12}/.test(n)) && Date.now() - t1 < 10_000) await new Promise((r) => setTimeout(r, 50));
    expect(listLeftovers(disksDir).sort()).toEqual([`${path.basename(i2)}.snap-notes.txt`]);
    expect(readFileSync(i2).equals(original)).toBe(true); // rolled back to the original
    expect(readFileSync(i3).length).toBe(1024 ** 3);

    // The extension matches its failed operation; the disk is raw with its original bytes, and usable.
    const ext = await s.client.request<{ properties: { provisioningState: string } }>('GET', extPath, { query: q });
    expect(ext.properties.provisioningState).toBe('Failed');
    const after = await s.client.request<Disk>('GET', diskPath('rg-hvm', 'hos'), { query: q });
    expect(after.properties.rsvault.imageFormat).toBe('raw');
    expect(after.properties.encryptionSettingsCollection).toBeUndefined();
    expect(readFileSync(image).equals(original)).toBe(true);
    const token = await s.client.token();
    const read = await rawReq('POST', `${s.origin}${vmPath('hvm')}/guestIo/read?api-version=${API}&osDisk=true&offset=${40 * MiB}&length=24`, token);
    expect(read.body.toString()).toBe('marker-before-encryption');
    const w = await rawReq('POST', `${s.origin}${vmPath('hvm')}/guestIo/write?api-version=${API}&osDisk=true&offset=${8 * MiB}`, token, Buffer.from('written-after-restart'));
    expect(w.status).toBe(200);

    // A retry is not blocked by a stuck row, and converts the disk.
    await s.client.waitForOperation(await ade(), { intervalMs: 100, timeoutMs: 60_000 });
    const enc = await s.client.request<Disk>('GET', diskPath('rg-hvm', 'hos'), { query: q });
    expect(enc.properties.rsvault.imageFormat).toBe('luks1');
    expect(enc.properties.encryptionSettingsCollection).toBeDefined();
    const vm = await s.client.request<{ properties: { storageProfile: { osDisk: { encryptionSettings?: { enabled: boolean } } } } }>('GET', vmPath('hvm'), { query: q });
    expect(vm.properties.storageProfile.osDisk.encryptionSettings?.enabled).toBe(true);
    const read2 = await rawReq('POST', `${s.origin}${vmPath('hvm')}/guestIo/read?api-version=${API}&osDisk=true&offset=${8 * MiB}&length=21`, token);
    expect(read2.body.toString()).toBe('written-after-restart');
    expect(listLeftovers(disksDir)).toEqual([`${path.basename(i2)}.snap-notes.txt`]);
  }, 60_000);
});

describe('server threadpool', () => {
  it.skipIf(!!process.env.UV_THREADPOOL_SIZE || process.platform !== 'linux')('the server runs 16 libuv pool threads (12 more than a server forced to 4)', async () => {
    const threads = (pid: number) => readdirSync(`/proc/${pid}/task`).length;
    const four = await startTestServer({ env: { UV_THREADPOOL_SIZE: '4' } });
    try {
      expect(threads(s.proc.pid!) - threads(four.proc.pid!)).toBeGreaterThanOrEqual(12);
    } finally {
      await four.stop();
    }
  }, 30_000);
});
