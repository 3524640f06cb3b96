/**
 * Compute slice against the real server: disks as image files, VMs, agent, classic VMs, guest I/O + changed-block
 * bitmap (incl. restart), Azure Disk Encryption with BEK + KEK verified by qemu-img and cryptsetup, LUKS imports,
 * SAS export, and bad input per endpoint.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import https from 'node:https';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, truncateSync, statSync, utimesSync, openSync, writeSync, closeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { startTestServer, type TestServer } from './helpers/server.js';
import { qemuImg } from './helpers/qemu.js';
import type { RsvaultClient } from '../src/client/index.js';

const API = '2022-08-01';
const KV_API = '2023-07-01';
const RG = 'rg-compute';
const suffix = randomBytes(3).toString('hex');
const KV = `kvade-${suffix}`;
const KV_OFF = `kvoff-${suffix}`;
let s: TestServer;
let sub: string;
let tmp: string;
const env = { RSVAULT_LUKS_ITERATIONS: '1000' };

const rgPath = () => `/subscriptions/${sub}/resourceGroups/${RG}`;
const diskPath = (n: string) => `${rgPath()}/providers/Microsoft.Compute/disks/${n}`;
const vmPath = (n: string) => `${rgPath()}/providers/Microsoft.Compute/virtualMachines/${n}`;
const vaultPath = (n: string) => `${rgPath()}/providers/Microsoft.KeyVault/vaults/${n}`;
const q = { 'api-version': API };
const MiB = 1024 * 1024;

type Disk = { id: string; properties: { diskSizeBytes: number; diskState: string; encryptionSettingsCollection?: { enabled: boolean; encryptionSettingsVersion: string; encryptionSettings: { diskEncryptionKey: { secretUrl: string; sourceVault: { id: string } }; keyEncryptionKey?: { keyUrl: string } }[] }; rsvault: { imagePath: string; imageFormat: string; locked: boolean } } };

function rawReq(method: string, url: string, o: { token?: string; body?: Buffer | string; headers?: Record<string, string> } = {}): Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method, ca: s.ca, headers: { ...(o.token ? { authorization: `Bearer ${o.token}` } : {}), ...(o.headers ?? {}) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    if (o.body !== undefined) req.write(o.body);
    req.end();
  });
}

async function guestWrite(vm: string, sel: string, offset: number, data: Buffer, c: RsvaultClient = s.client) {
  const r = await rawReq('POST', `${s.origin}${vmPath(vm)}/guestIo/write?api-version=${API}&${sel}&offset=${offset}`, { token: await c.token(), body: data, headers: { 'content-type': 'application/octet-stream' } });
  if (r.status !== 200) throw new Error(`guest write ${r.status}: ${r.body.toString()}`);
}
async function guestRead(vm: string, sel: string, offset: number, length: number): Promise<Buffer> {
  const r = await rawReq('POST', `${s.origin}${vmPath(vm)}/guestIo/read?api-version=${API}&${sel}&offset=${offset}&length=${length}`, { token: await s.client.token() });
  if (r.status !== 200) throw new Error(`guest read ${r.status}: ${r.body.toString()}`);
  return r.body;
}
const kvReq = <T>(vault: string, method: string, p: string, body?: unknown, c: RsvaultClient = s.client) =>
  c.request<T>(method, p, { baseUrl: `https://${vault}.vault.localhost:${s.port}`, resource: 'https://vault.localhost', query: { 'api-version': '7.4' }, body });

async function importDisk(name: string, file: string, extra: Record<string, unknown> = {}) {
  return s.client.request<Disk>('PUT', diskPath(name), { query: q, body: { location: 'local', properties: { creationData: { createOption: 'Import', sourceUri: file, ...extra } } } });
}
async function waitOp(res: { headers: Record<string, unknown> }) {
  return s.client.waitForOperation(res as never, { intervalMs: 100, timeoutMs: 60_000 });
}
async function expectErr(p: Promise<unknown>, status: number, code: string) {
  const e = (await p.then(() => undefined, (x: unknown) => x)) as { status: number; code: string; message: string } | undefined;
  expect(e, `expected ${code}`).toBeDefined();
  expect({ status: e!.status, code: e!.code }).toEqual({ status, code });
  expect(e!.message.length).toBeGreaterThan(10);
  return e!;
}

let plainOs: Buffer;
let lukdData: Buffer;

/** A cryptsetup-made and a qemu-made LUKS1 image of the same 2 MiB, passphrase 'imported-pass'. */
function makeForeignLuksImages(): void {
  lukdData = randomBytes(2 * MiB);
  writeFileSync(path.join(tmp, 'p.raw'), lukdData);
  writeFileSync(path.join(tmp, 'pk'), 'imported-pass');
  const c = path.join(tmp, 'c.img');
  writeFileSync(c, '');
  truncateSync(c, 4 * MiB);
  execFileSync('cryptsetup', ['luksFormat', '--type', 'luks1', '--batch-mode', '--key-file', path.join(tmp, 'pk'), '--pbkdf-force-iterations', '1000', c]);
  execFileSync('qemu-img', ['convert', '-n', '--object', 'secret,id=s,data=imported-pass', '-f', 'raw', path.join(tmp, 'p.raw'), '--target-image-opts', `driver=luks,key-secret=s,file.filename=${c}`]);
  qemuImg(['convert', '--object', 'secret,id=s,data=imported-pass', '-f', 'raw', path.join(tmp, 'p.raw'), '-O', 'luks', '-o', 'key-secret=s,iter-time=10', path.join(tmp, 'q.img')]);
}
let adminObjectId: string;

beforeAll(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'compute-test-'));
  makeForeignLuksImages();
  s = await startTestServer({ env });
  sub = s.creds.subscriptionId;
  adminObjectId = s.creds.objectId;
  await s.client.request('PUT', rgPath(), { query: { 'api-version': '2021-04-01' }, body: { location: 'local' } });
  const policy = [{ tenantId: s.creds.tenantId, objectId: adminObjectId, permissions: { keys: ['all'], secrets: ['all'] } }];
  for (const [name, ade] of [[KV, true], [KV_OFF, false]] as const) {
    await s.client.request('PUT', vaultPath(name), { query: { 'api-version': KV_API }, body: { location: 'local', properties: { tenantId: s.creds.tenantId, sku: { family: 'A', name: 'standard' }, accessPolicies: policy, enabledForDiskEncryption: ade } } });
  }
  await kvReq(KV, 'POST', '/keys/kek/create', { kty: 'RSA', key_size: 2048 });
  plainOs = randomBytes(8 * MiB);
  writeFileSync(path.join(tmp, 'os.raw'), plainOs);
  writeFileSync(path.join(tmp, 'data.raw'), Buffer.alloc(4 * MiB));
}, 120_000);

afterAll(async () => {
  if (process.env.DEBUG_COMPUTE) console.log(s?.output());
  await s?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

describe('disks and VMs', () => {
  it('creates sparse empty disks, imports images (copy or in place), lists and shows them', async () => {
    const d = await s.client.request<Disk>('PUT', diskPath('empty1'), { query: { 'api-version': '2022-11-01' }, body: { location: 'local', properties: { creationData: { createOption: 'Empty' }, diskSizeGB: 1 } } });
    expect(d.properties.diskSizeBytes).toBe(1024 ** 3);
    const st = statSync(d.properties.rsvault.imagePath);
    expect(st.size).toBe(1024 ** 3);
    expect(st.blocks * 512).toBeLessThan(1024 * 1024); // sparse
    const imp = await importDisk('osdisk', path.join(tmp, 'os.raw'));
    expect(imp.properties.diskSizeBytes).toBe(8 * MiB);
    expect(imp.properties.rsvault.imagePath).not.toBe(path.join(tmp, 'os.raw'));
    const ref = await importDisk('datadisk', path.join(tmp, 'data.raw'), { referenceInPlace: true });
    // In place = a hard link in the disk store to the checked inode (pinned: a later swap of the source path changes nothing).
    expect(statSync(ref.properties.rsvault.imagePath).ino).toBe(statSync(path.join(tmp, 'data.raw')).ino);
    expect(path.dirname(ref.properties.rsvault.imagePath)).toBe(path.join(s.dataDir, 'disks'));
    const list = await s.client.list<Disk>(`${rgPath()}/providers/Microsoft.Compute/disks`, { query: q });
    expect(list.map((x) => x.id.split('/').pop()).sort()).toEqual(['datadisk', 'empty1', 'osdisk']);
  });

  it('creates a VM with OS disk + data disks by lun; agent Ready by default; power state; instance view', async () => {
    const vm = await s.client.request<{ properties: { vmId: string; storageProfile: { osDisk: { managedDisk: { id: string } }; dataDisks: { lun: number }[] } } }>('PUT', vmPath('vm1'), {
      query: q,
      body: {
        location: 'local',
        properties: {
          hardwareProfile: { vmSize: 'Standard_DS1_v2' },
          osProfile: { computerName: 'vm1', adminUsername: 'azureuser', linuxConfiguration: { disablePasswordAuthentication: true } },
          storageProfile: {
            osDisk: { osType: 'Linux', createOption: 'Attach', managedDisk: { id: diskPath('osdisk') } },
            dataDisks: [
              { lun: 0, createOption: 'Attach', managedDisk: { id: diskPath('datadisk') } },
              { lun: 1, createOption: 'Attach', managedDisk: { id: diskPath('empty1') } },
            ],
          },
        },
      },
    });
    expect(vm.properties.storageProfile.dataDisks.map((d) => d.lun)).toEqual([0, 1]);
    const iv = await s.client.request<{ vmAgent: { vmAgentVersion: string; statuses: { displayStatus: string }[] }; statuses: { code: string }[] }>('GET', `${vmPath('vm1')}/instanceView`, { query: q });
    expect(iv.vmAgent.statuses[0]!.displayStatus).toBe('Ready');
    expect(iv.statuses.map((x) => x.code)).toContain('PowerState/running');
    const disk = await s.client.request<Disk>('GET', diskPath('osdisk'), { query: q });
    expect(disk.properties.diskState).toBe('Attached');

    // stop → agent NotReady, guest I/O refused; start again
    await waitOp(await s.client.send('POST', `${vmPath('vm1')}/powerOff`, { query: q }));
    const iv2 = await s.client.request<{ vmAgent: { statuses: { displayStatus: string }[] }; statuses: { code: string }[] }>('GET', `${vmPath('vm1')}/instanceView`, { query: q });
    expect(iv2.statuses.map((x) => x.code)).toContain('PowerState/stopped');
    expect(iv2.vmAgent.statuses[0]!.displayStatus).toBe('Not Ready');
    await expect(guestWrite('vm1', 'osDisk=true', 0, Buffer.alloc(512))).rejects.toThrow(/409.*OperationNotAllowed/);
    await waitOp(await s.client.send('POST', `${vmPath('vm1')}/start`, { query: q }));

    // agent uninstall / install
    await s.client.request('POST', `${vmPath('vm1')}/vmAgent/uninstall`, { query: q });
    const iv3 = await s.client.request<{ vmAgent: { statuses: { displayStatus: string; message: string }[] } }>('GET', `${vmPath('vm1')}/instanceView`, { query: q });
    expect(iv3.vmAgent.statuses[0]!.message).toMatch(/not installed/);
    await s.client.request('POST', `${vmPath('vm1')}/vmAgent/install`, { query: q });
  });

  it('a VM with provisionVMAgent=false has no agent; FromImage creates its OS disk', async () => {
    await s.client.request('PUT', vmPath('vm-noagent'), { query: q, body: { location: 'local', properties: { hardwareProfile: { vmSize: 'B1s' }, osProfile: { computerName: 'x', adminUsername: 'u', windowsConfiguration: { provisionVMAgent: false } }, storageProfile: { osDisk: { createOption: 'FromImage', diskSizeGB: 1 } } } } });
    const iv = await s.client.request<{ vmAgent: { statuses: { message: string }[] } }>('GET', `${vmPath('vm-noagent')}/instanceView`, { query: q });
    expect(iv.vmAgent.statuses[0]!.message).toMatch(/not installed/);
    const vm = await s.client.request<{ properties: { storageProfile: { osDisk: { osType: string } } } }>('GET', vmPath('vm-noagent'), { query: q });
    expect(vm.properties.storageProfile.osDisk.osType).toBe('Windows');
  });

  it('classic VMs: create and list', async () => {
    await s.client.request('PUT', `${rgPath()}/providers/Microsoft.ClassicCompute/virtualMachines/classic1`, { query: { 'api-version': '2017-04-01' }, body: { location: 'local', properties: { hardwareProfile: { size: 'Small' } } } });
    const l = await s.client.list<{ name: string; type: string }>(`/subscriptions/${sub}/providers/Microsoft.ClassicCompute/virtualMachines`, { query: { 'api-version': '2017-04-01' } });
    expect(l.map((x) => `${x.type}/${x.name}`)).toEqual(['Microsoft.ClassicCompute/virtualMachines/classic1']);
  });
});

describe('guest I/O and the changed-block bitmap', () => {
  it('reads back what it wrote; 3 scattered writes dirty exactly those blocks; survives a restart; outside change → invalid', async () => {
    const sel = 'lun=1';
    await s.client.request('POST', `${diskPath('empty1')}/markBackedUp`, { query: q });
    const offs = [100, 5 * 65536 + 7, 1000 * 65536 - 10]; // last one spans blocks 999 and 1000
    for (const o of offs) await guestWrite('vm1', sel, o, Buffer.from('hello block'));
    expect((await guestRead('vm1', sel, offs[1]!, 11)).toString()).toBe('hello block');
    const cb = await s.client.request<{ valid: boolean; dirtyBlocks: number[]; blockSize: number }>('GET', `${diskPath('empty1')}/changedBlocks`, { query: q });
    expect(cb).toMatchObject({ valid: true, blockSize: 65536, dirtyBlocks: [0, 5, 999, 1000] });

    // restart with the same data dir
    const dataDir = s.dataDir;
    await s.stop({ keepData: true });
    s = await startTestServer({ dataDir, env });
    const cb2 = await s.client.request<{ valid: boolean; dirtyBlocks: number[] }>('GET', `${diskPath('empty1')}/changedBlocks`, { query: q });
    expect(cb2).toMatchObject({ valid: true, dirtyBlocks: [0, 5, 999, 1000] });

    // modification outside rsvault (mtime)
    const d = await s.client.request<Disk>('GET', diskPath('empty1'), { query: q });
    const fd = openSync(d.properties.rsvault.imagePath, 'r+');
    writeSync(fd, Buffer.from('x'), 0, 1, 3 * 65536);
    closeSync(fd);
    utimesSync(d.properties.rsvault.imagePath, new Date(), new Date(Date.now() + 5000));
    const cb3 = await s.client.request<{ valid: boolean; reason: string }>('GET', `${diskPath('empty1')}/changedBlocks`, { query: q });
    expect(cb3.valid).toBe(false);
    expect(cb3.reason).toMatch(/outside rsvault/);
    // a successful backup makes it valid again
    await s.client.request('POST', `${diskPath('empty1')}/markBackedUp`, { query: q });
    expect((await s.client.request<{ valid: boolean; dirtyBlocks: number[] }>('GET', `${diskPath('empty1')}/changedBlocks`, { query: q })).dirtyBlocks).toEqual([]);
  }, 60_000);
});

describe('Azure Disk Encryption', () => {
  const settings = () => ({
    EncryptionOperation: 'EnableEncryption',
    KeyVaultURL: `https://${KV}.vault.localhost:${s.port}/`,
    KeyVaultResourceId: vaultPath(KV),
    KeyEncryptionKeyURL: `https://${KV}.vault.localhost:${s.port}/keys/kek`,
    KekVaultResourceId: vaultPath(KV),
    KeyEncryptionAlgorithm: 'RSA-OAEP',
    VolumeType: 'OS',
  });
  const extPath = () => `${vmPath('vm1')}/extensions/AzureDiskEncryptionForLinux`;
  const ext = (st: Record<string, unknown>, c: RsvaultClient = s.client) =>
    c.send('PUT', extPath(), { query: q, body: { location: 'local', properties: { publisher: 'Microsoft.Azure.Security', type: 'AzureDiskEncryptionForLinux', typeHandlerVersion: '1.1', settings: st } } });

  it('refuses: vault not enabled for disk encryption, missing KEK, principal without Key Vault permissions (nothing written)', async () => {
    const r1 = await ext({ ...settings(), KeyVaultURL: undefined, KeyVaultResourceId: vaultPath(KV_OFF) });
    expect(r1.status).toBe(400);
    expect((r1.body as { error: { code: string } }).error.code).toBe('KeyVaultNotEnabledForDiskEncryption');
    const r2 = await ext({ ...settings(), KeyEncryptionKeyURL: `https://${KV}.vault.localhost:${s.port}/keys/nokek` });
    expect((r2.body as { error: { code: string } }).error.code).toBe('KeyEncryptionKeyNotFound');
    // a Contributor without access policies
    const sp = await s.client.request<{ id: string; appId: string; passwordCredentials: { secretText: string }[] }>('POST', '/v1.0/servicePrincipals', { body: { displayName: 'ade-noperm' } });
    const roles = await s.client.request<{ value: { id: string }[] }>('GET', `/subscriptions/${sub}/providers/Microsoft.Authorization/roleDefinitions`, { query: { 'api-version': '2022-04-01', $filter: "roleName eq 'Contributor'" } });
    await s.client.request('PUT', `/subscriptions/${sub}/providers/Microsoft.Authorization/roleAssignments/${randomBytes(16).toString('hex').replace(/(.{8})(.{4})(.{4})(.{4})(.{12})/, '$1-$2-$3-$4-$5')}`, { query: { 'api-version': '2022-04-01' }, body: { properties: { roleDefinitionId: roles.value[0]!.id, principalId: sp.id } } });
    const c = s.clientFor(sp.appId, sp.passwordCredentials[0]!.secretText);
    const r3 = await ext(settings(), c);
    c.close();
    expect(r3.status).toBe(403);
    expect((r3.body as { error: { code: string; message: string } }).error).toMatchObject({ code: 'KeyVaultAccessDenied' });
    expect((r3.body as { error: { message: string } }).error.message).toMatch(/secrets set.*keys get, keys wrapKey|keys get, keys wrapKey/);
    const d = await s.client.request<Disk>('GET', diskPath('osdisk'), { query: q });
    expect(d.properties.rsvault.imageFormat).toBe('raw');
    expect(d.properties.encryptionSettingsCollection).toBeUndefined();
    const secrets = await kvReq<{ value: unknown[] }>(KV, 'GET', '/secrets');
    expect(secrets.value).toEqual([]);
  });

  it('enable with KEK: disk becomes LUKS1 readable by qemu-img and cryptsetup; wrapped BEK secret with ADE tags; guest I/O through LUKS', async () => {
    // write a marker first (raw), then encrypt: existing data preserved
    const marker = Buffer.from('before encryption');
    await guestWrite('vm1', 'osDisk=true', 4096, marker);
    marker.copy(plainOs, 4096);
    const t0 = Date.now();
    const res = await ext(settings());
    expect(res.status).toBe(201);
    await waitOp(res);
    const encMs = Date.now() - t0;
    const e = await s.client.request<{ properties: { provisioningState: string } }>('GET', extPath(), { query: q });
    expect(e.properties.provisioningState).toBe('Succeeded');

    const d = await s.client.request<Disk>('GET', diskPath('osdisk'), { query: q });
    expect(d.properties.rsvault.imageFormat).toBe('luks1');
    const esc = d.properties.encryptionSettingsCollection!;
    expect(esc.enabled).toBe(true);
    expect(esc.encryptionSettingsVersion).toBe('1.1');
    const secretUrl = esc.encryptionSettings[0]!.diskEncryptionKey.secretUrl;
    const keyUrl = esc.encryptionSettings[0]!.keyEncryptionKey!.keyUrl;
    expect(secretUrl).toMatch(new RegExp(`^https://${KV}\\.vault\\.localhost:${s.port}/secrets/[0-9a-f-]{36}/[0-9a-f]{32}$`));
    expect(keyUrl).toMatch(new RegExp(`^https://${KV}\\.vault\\.localhost:${s.port}/keys/kek/[0-9a-f]{32}$`));
    expect(esc.encryptionSettings[0]!.diskEncryptionKey.sourceVault.id.toLowerCase()).toBe(vaultPath(KV).toLowerCase());
    const vm = await s.client.request<{ properties: { storageProfile: { osDisk: { encryptionSettings: { enabled: boolean; diskEncryptionKey: { secretUrl: string } } } } } }>('GET', vmPath('vm1'), { query: q });
    expect(vm.properties.storageProfile.osDisk.encryptionSettings).toMatchObject({ enabled: true, diskEncryptionKey: { secretUrl } });
    // the image grew by the 2 MiB LUKS header; the guest size is unchanged
    expect(statSync(d.properties.rsvault.imagePath).size).toBe(8 * MiB + 2 * MiB);
    expect(d.properties.diskSizeBytes).toBe(8 * MiB);

    // the secret: wrapped, tags, content type
    const [, , , name, version] = new URL(secretUrl).pathname.split('/');
    void name;
    const secret = await kvReq<{ value: string; contentType: string; tags: Record<string, string> }>(KV, 'GET', `/secrets/${new URL(secretUrl).pathname.split('/')[2]}/${version ?? new URL(secretUrl).pathname.split('/')[3]}`);
    expect(secret.contentType).toBe('Wrapped BEK');
    expect(secret.tags).toMatchObject({ DiskEncryptionKeyFileName: 'LinuxPassPhraseFileName', DiskEncryptionKeyEncryptionAlgorithm: 'RSA-OAEP', DiskEncryptionKeyEncryptionKeyURL: keyUrl, MachineName: 'vm1' });
    const kekVersion = keyUrl.split('/').pop();
    const un = await kvReq<{ value: string }>(KV, 'POST', `/keys/kek/${kekVersion}/unwrapkey`, { alg: 'RSA-OAEP', value: secret.value });
    const bek = Buffer.from(un.value, 'base64url').toString('ascii');
    expect(bek).toMatch(/^[A-Za-z0-9+/]{170}==$/); // base64 of 127 bytes
    expect(secret.value).not.toBe(bek);
    expect(Buffer.from(secret.value, 'base64url').toString('ascii')).not.toBe(bek);

    // guest write through LUKS, then independent checks
    const more = randomBytes(70_000);
    await guestWrite('vm1', 'osDisk=true', 3 * MiB + 123, more);
    more.copy(plainOs, 3 * MiB + 123);
    expect((await guestRead('vm1', 'osDisk=true', 3 * MiB + 100, 1000)).equals(plainOs.subarray(3 * MiB + 100, 3 * MiB + 1100))).toBe(true);
    const img = d.properties.rsvault.imagePath;
    const out = path.join(tmp, 'os.out');
    execFileSync('qemu-img', ['convert', '--object', `secret,id=s,data=${bek}`, '--image-opts', `driver=luks,key-secret=s,file.filename=${img}`, '-O', 'raw', out]);
    expect(readFileSync(out).equals(plainOs)).toBe(true);
    writeFileSync(path.join(tmp, 'bek'), bek);
    execFileSync('cryptsetup', ['open', '--test-passphrase', img, '--key-file', path.join(tmp, 'bek')]);
    const dump = execFileSync('cryptsetup', ['luksDump', img]).toString();
    expect(dump).toMatch(/Version:\s+1/);
    expect(dump).toMatch(/xts-plain64/);
    expect(dump).toMatch(/MK bits:\s+512/);
    expect(dump).toMatch(/Hash spec:\s+sha256/);
    expect(encMs).toBeLessThan(30_000);

    // a second enable on the same volume is refused
    const again = await ext(settings());
    expect((again.body as { error: { code: string } }).error.code).toBe('DiskAlreadyEncrypted');
  });

  it('disable decrypts in place and removes the stamps', async () => {
    const res = await ext({ EncryptionOperation: 'DisableEncryption', VolumeType: 'OS' });
    expect(res.status).toBe(200);
    await waitOp(res);
    const d = await s.client.request<Disk>('GET', diskPath('osdisk'), { query: q });
    expect(d.properties.rsvault.imageFormat).toBe('raw');
    expect(d.properties.encryptionSettingsCollection).toBeUndefined();
    expect(readFileSync(d.properties.rsvault.imagePath).equals(plainOs)).toBe(true);
  });
});

describe('imported LUKS images', () => {
  it('reads cryptsetup- and qemu-made LUKS1 images with their passphrase; wrong passphrase refused', async () => {
    // images made by the other tools in beforeAll (before the server starts: long idle gaps between requests make the
    // client reuse a keep-alive socket the server already closed)
    const data = lukdData;
    const c = path.join(tmp, 'c.img');
    const qi = path.join(tmp, 'q.img');
    let lun = 0;
    for (const [n, f] of [['lc', c], ['lq', qi]] as const) {
      const d = await importDisk(n, f);
      expect(d.properties.rsvault).toMatchObject({ imageFormat: 'luks1', locked: true });
      await expectErr(s.client.request('POST', `${diskPath(n)}/unlock`, { query: q, body: { passphrase: 'nope' } }), 400, 'InvalidPassphrase');
      const u = await s.client.request<Disk>('POST', `${diskPath(n)}/unlock`, { query: q, body: { passphrase: 'imported-pass' } });
      expect(u.properties.rsvault.locked).toBe(false);
      await s.client.request('PUT', vmPath(`vml${n}`), { query: q, body: { location: 'local', properties: { hardwareProfile: { vmSize: 'B1s' }, storageProfile: { osDisk: { createOption: 'FromImage', diskSizeGB: 1 }, dataDisks: [{ lun, createOption: 'Attach', managedDisk: { id: diskPath(n) } }] } } } });
      expect((await guestRead(`vml${n}`, `lun=${lun}`, 0, data.length)).equals(data)).toBe(true);
      lun++;
    }
  });
});

describe('export (SAS) and upload', () => {
  it('beginGetAccess returns a SAS URL serving raw bytes with Range; endGetAccess revokes it', async () => {
    await importDisk('exp', path.join(tmp, 'os.raw'));
    const g = await s.client.request<{ accessSAS: string }>('POST', `${diskPath('exp')}/beginGetAccess`, { query: q, body: { access: 'Read', durationInSeconds: 600 } });
    const full = await rawReq('GET', g.accessSAS);
    expect(full.status).toBe(200);
    expect(full.body.equals(readFileSync(path.join(tmp, 'os.raw')))).toBe(true);
    const part = await rawReq('GET', g.accessSAS, { headers: { range: 'bytes=100-199' } });
    expect(part.status).toBe(206);
    expect(part.body.equals(readFileSync(path.join(tmp, 'os.raw')).subarray(100, 200))).toBe(true);
    await s.client.request('POST', `${diskPath('exp')}/endGetAccess`, { query: q });
    expect((await rawReq('GET', g.accessSAS)).status).toBe(403);
  });

  it('upload: createOption Upload + Write SAS + page PUTs', async () => {
    await s.client.request('PUT', diskPath('up'), { query: q, body: { location: 'local', properties: { creationData: { createOption: 'Upload', uploadSizeBytes: 1 * MiB } } } });
    const g = await s.client.request<{ accessSAS: string }>('POST', `${diskPath('up')}/beginGetAccess`, { query: q, body: { access: 'Write', durationInSeconds: 600 } });
    const page = randomBytes(65536);
    const r = await rawReq('PUT', g.accessSAS, { body: page, headers: { 'x-ms-range': 'bytes=65536-131071', 'x-ms-page-write': 'update', 'content-type': 'application/octet-stream' } });
    expect(r.status).toBe(201);
    await s.client.request('POST', `${diskPath('up')}/endGetAccess`, { query: q });
    const d = await s.client.request<Disk>('GET', diskPath('up'), { query: q });
    expect(d.properties.diskState).toBe('Unattached');
    expect(readFileSync(d.properties.rsvault.imagePath).subarray(65536, 131072).equals(page)).toBe(true);
  });
});

describe('bad input', () => {
  it('malformed body, missing resources, bad params, missing permission: clear codes, nothing written, server alive', async () => {
    const r = await rawReq('PUT', `${s.origin}${diskPath('bad1')}?api-version=${API}`, { token: await s.client.token(), body: '{"location":', headers: { 'content-type': 'application/json' } });
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body.toString()).error.code).toBe('InvalidRequestContent');
    await expectErr(s.client.request('PUT', diskPath('bad2'), { query: q, body: { location: 'local', properties: { creationData: { createOption: 'Empty' } } } }), 400, 'InvalidRequestContent');
    await expectErr(s.client.request('PUT', diskPath('bad3'), { query: q, body: { location: 'local', properties: { creationData: { createOption: 'Import', sourceUri: '/nonexistent/x.img' } } } }), 400, 'InvalidParameter');
    await expectErr(s.client.request('PUT', diskPath('bad4'), { query: q, body: { properties: {} } }), 400, 'InvalidRequestContent');
    await expectErr(s.client.request('PUT', diskPath('-bad'), { query: q, body: { location: 'local', properties: { diskSizeGB: 1 } } }), 400, 'InvalidResourceName');
    await expectErr(s.client.request('GET', diskPath('nodisk'), { query: q }), 404, 'ResourceNotFound');
    await expectErr(s.client.request('GET', vmPath('novm'), { query: q }), 404, 'ResourceNotFound');
    await expectErr(s.client.request('GET', diskPath('osdisk')), 400, 'MissingApiVersionParameter');
    await expectErr(s.client.request('PUT', `/subscriptions/${sub}/resourceGroups/norg/providers/Microsoft.Compute/disks/d`, { query: q, body: { location: 'local', properties: { diskSizeGB: 1 } } }), 404, 'ResourceGroupNotFound');
    await expectErr(s.client.request('PUT', vmPath('vmbad'), { query: q, body: { location: 'local', properties: { storageProfile: { osDisk: { createOption: 'Attach', managedDisk: { id: diskPath('nodisk') } } } } } }), 404, 'NotFound');
    await expectErr(s.client.request('PUT', vmPath('vmbad'), { query: q, body: { location: 'local', properties: { storageProfile: { osDisk: { createOption: 'Attach', managedDisk: { id: diskPath('osdisk') } } } } } }), 409, 'OperationNotAllowed');
    await expectErr(s.client.request('DELETE', diskPath('osdisk'), { query: q }), 409, 'OperationNotAllowed');
    await expect(guestWrite('vm1', 'lun=9', 0, Buffer.alloc(1))).rejects.toThrow(/404.*NotFound/);
    await expect(guestWrite('vm1', 'osDisk=true', 8 * MiB - 1, Buffer.alloc(2))).rejects.toThrow(/400.*InvalidParameter/);
    await expect(guestWrite('vm1', 'offset=1', 0, Buffer.alloc(2))).rejects.toThrow(/400.*InvalidParameter/);
    const ext = await s.client.send('PUT', `${vmPath('vm1')}/extensions/AzureDiskEncryptionForLinux`, { query: q, body: { location: 'local', properties: { publisher: 'Microsoft.Azure.Security', type: 'AzureDiskEncryptionForLinux', settings: { EncryptionOperation: 'Explode' } } } });
    expect((ext.body as { error: { code: string } }).error.code).toBe('InvalidParameter');
    // Reader cannot write
    const sp = await s.client.request<{ id: string; appId: string; passwordCredentials: { secretText: string }[] }>('POST', '/v1.0/servicePrincipals', { body: { displayName: 'compute-reader' } });
    const roles = await s.client.request<{ value: { id: string }[] }>('GET', `/subscriptions/${sub}/providers/Microsoft.Authorization/roleDefinitions`, { query: { 'api-version': '2022-04-01', $filter: "roleName eq 'Reader'" } });
    await s.client.request('PUT', `/subscriptions/${sub}/providers/Microsoft.Authorization/roleAssignments/0000aaaa-0000-4000-8000-${randomBytes(6).toString('hex')}`, { query: { 'api-version': '2022-04-01' }, body: { properties: { roleDefinitionId: roles.value[0]!.id, principalId: sp.id } } });
    const reader = s.clientFor(sp.appId, sp.passwordCredentials[0]!.secretText);
    await expectErr(reader.request('PUT', diskPath('byreader'), { query: q, body: { location: 'local', properties: { diskSizeGB: 1 } } }), 403, 'AuthorizationFailed');
    await expect(guestWrite('vm1', 'osDisk=true', 0, Buffer.alloc(1), reader)).rejects.toThrow(/403/);
    expect((await reader.request<Disk>('GET', diskPath('osdisk'), { query: q })).id).toBeDefined();
    reader.close();
    // nothing written
    const names = (await s.client.list<Disk>(`${rgPath()}/providers/Microsoft.Compute/disks`, { query: q })).map((d) => d.id.split('/').pop());
    for (const n of ['bad1', 'bad2', 'bad3', 'bad4', 'byreader']) expect(names).not.toContain(n);
    expect((await s.client.request<{ status: string }>('GET', '/healthz', { anonymous: true })).status).toBe('ok');
  });
});
