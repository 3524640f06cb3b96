/**
 * The Debian az 2.45, unmodified (only the az-compute-shim for its packaging gap on `az vm …` and
 * `az backup protection enable-for-vm`), runs the whole encrypted-VM backup-and-restore flow against the real server:
 * group create → keyvault create --enabled-for-disk-encryption → ad sp show (Backup Management Service) → keyvault
 * set-policy → rest (the KEK) → disk create ×2 → resource create (the VM: az vm create needs Microsoft.Network; the ADE
 * extension: az vm encryption enable cannot load in Debian's packaging) → vm encryption show → backup vault create → backup protection enable-for-vm → backup-now → (more guest bytes)
 * → backup-now (incremental) → storage account create → backup restore restore-disks → storage blob download (VHD,
 * config, template) → deployment group create → resource invoke-action start → the restored VM reads the original bytes. Guest bytes are
 * written and read with rsvault's guest I/O API (no Azure client has one).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFileSync, writeFileSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import https from 'node:https';
import { startTestServer, type TestServer } from './helpers/server.js';
import { azSession, type AzSession } from './helpers/az.js';
import { env } from './recovery-fixture.js';

const MiB = 1024 * 1024;
let s: TestServer;
let cfg: string;
const sfx = randomBytes(3).toString('hex');
const RG = 'rg-e2e-az';
const KV = `kvaz${sfx}`;
const SA = `staz${sfx}`;
const VM = 'vmaz';
const RVM = 'vmaz-restored';
const RSV = 'rsvaz';
const B1 = { off: 1 * MiB, data: randomBytes(64) };
const B2 = { off: 12 * MiB, data: randomBytes(64) };
const rgId = () => `/subscriptions/${s.creds.subscriptionId}/resourceGroups/${RG}`;

let azs: AzSession;
const ok: AzSession['ok'] = (args, o) => azs.ok(args, o);

/** rsvault's guest I/O API (POST …/guestIo/{write|read}) with an ARM token. */
async function guest(vm: string, op: 'write' | 'read', offset: number, data?: Buffer, length?: number): Promise<Buffer> {
  const token = await s.client.token();
  const url = `${s.origin}${rgId()}/providers/Microsoft.Compute/virtualMachines/${vm}/guestIo/${op}?api-version=2022-08-01&osDisk=true&offset=${offset}${length ? `&length=${length}` : ''}`;
  const body = data ?? Buffer.alloc(0);
  return new Promise((resolve, reject) => {
    const r = https.request(url, { method: 'POST', ca: s.ca, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream', 'content-length': body.length } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => (res.statusCode === 200 ? resolve(Buffer.concat(chunks)) : reject(new Error(`guest ${op} ${res.statusCode}: ${Buffer.concat(chunks).toString()}`))));
    });
    r.on('error', reject);
    r.end(body);
  });
}

beforeAll(async () => {
  s = await startTestServer({ env });
  azs = await azSession(s, { storageSuffix: true, sslCertFile: true, prefix: 'rsv-e2e-az-' });
  cfg = azs.dir;
  writeFileSync(path.join(cfg, 'os.raw'), randomBytes(16 * MiB));
  writeFileSync(path.join(cfg, 'data.raw'), randomBytes(8 * MiB));
}, 120_000);

afterAll(async () => {
  await s?.stop();
  azs?.close();
});

let bag: Record<string, string>;
let templateFile: string;

describe('az 2.45: create → encrypt → protect → backup → incremental → restore disks → download → deploy → start → read', () => {
  it('group, key vault (disk encryption, Azure Backup policy for the Backup Management Service), KEK, disks, VM, ADE', async () => {
    expect((await ok(['group', 'create', '-n', RG, '-l', 'local'])).json).toMatchObject({ properties: { provisioningState: 'Succeeded' } });
    const kv = await ok(['keyvault', 'create', '-n', KV, '-g', RG, '-l', 'local', '--enabled-for-disk-encryption', 'true']);
    expect(kv.json).toMatchObject({ properties: { enabledForDiskEncryption: true, vaultUri: `https://${KV}.vault.localhost:${s.port}/` } });
    const bms = (await ok(['ad', 'sp', 'show', '--id', '262044b1-e2ce-469f-a196-69ab7ada62d3'])).json as { id: string; displayName: string };
    expect(bms.displayName).toBe('Backup Management Service');
    await ok(['keyvault', 'set-policy', '-n', KV, '-g', RG, '--object-id', bms.id, '--key-permissions', 'get', 'list', 'backup', '--secret-permissions', 'get', 'list', 'backup']);
    // `az keyvault key create` cannot load in Debian's az 2.45 (no azure.keyvault.v7_0 module: the packaging gap the
    // README names), so the KEK is created with az's own `az rest` and the Key Vault REST API.
    const kek = (await ok(['rest', '--method', 'post', '--url', `https://${KV}.vault.localhost:${s.port}/keys/kek/create?api-version=7.4`, '--resource', `https://vault.localhost:${s.port}`, '--body', JSON.stringify({ kty: 'RSA', key_size: 2048 })])).json as { key: { kid: string } };
    expect(kek.key.kid).toMatch(new RegExp(`^https://${KV}\\.vault\\.localhost:${s.port}/keys/kek/`));
    const dOs = (await ok(['disk', 'create', '-g', RG, '-n', `${VM}-os`, '-l', 'local', '--source', `file://${path.join(cfg, 'os.raw')}`, '--os-type', 'Linux'])).json as { id: string };
    const dData = (await ok(['disk', 'create', '-g', RG, '-n', `${VM}-data`, '-l', 'local', '--source', `file://${path.join(cfg, 'data.raw')}`])).json as { id: string };
    const vm = await ok(['resource', 'create', '--id', `${rgId()}/providers/Microsoft.Compute/virtualMachines/${VM}`, '--api-version', '2022-08-01', '--is-full-object', '--properties', JSON.stringify({
      location: 'local',
      properties: { hardwareProfile: { vmSize: 'Standard_DS1_v2' }, storageProfile: { osDisk: { osType: 'Linux', createOption: 'Attach', managedDisk: { id: dOs.id } }, dataDisks: [{ lun: 0, createOption: 'Attach', managedDisk: { id: dData.id } }] } },
    })]);
    expect(vm.json).toMatchObject({ properties: { provisioningState: 'Succeeded' } });
    // `az vm encryption enable` and `az vm extension set` crash in Debian's az 2.45 even with the shim (the
    // VirtualMachineExtension model of the profile's compute API version is not packaged), so the ADE extension is
    // created as a generic resource, with the settings `az vm encryption enable` would send.
    const kvId = `${rgId()}/providers/Microsoft.KeyVault/vaults/${KV}`;
    const ext = await ok(['resource', 'create', '--id', `${rgId()}/providers/Microsoft.Compute/virtualMachines/${VM}/extensions/AzureDiskEncryptionForLinux`, '--api-version', '2022-08-01', '--is-full-object', '--properties', JSON.stringify({
      location: 'local',
      properties: { publisher: 'Microsoft.Azure.Security', type: 'AzureDiskEncryptionForLinux', typeHandlerVersion: '1.1', settings: { EncryptionOperation: 'EnableEncryption', KeyVaultURL: `https://${KV}.vault.localhost:${s.port}/`, KeyVaultResourceId: kvId, KeyEncryptionKeyURL: kek.key.kid, KekVaultResourceId: kvId, KeyEncryptionAlgorithm: 'RSA-OAEP', VolumeType: 'All' } },
    })]);
    expect(ext.json).toMatchObject({ properties: { provisioningState: 'Succeeded' } });
    const show = await ok(['vm', 'encryption', 'show', '-g', RG, '-n', VM], { shim: true });
    expect(show.json).toMatchObject({ osDisk: 'Encrypted', dataDisk: 'Encrypted', osDiskEncryptionSettings: { enabled: true, keyEncryptionKey: { keyUrl: kek.key.kid } } });
    await guest(VM, 'write', B1.off, B1.data);
  }, 120_000);

  it('backup vault, enable-for-vm, backup-now (full), more bytes, backup-now (incremental)', async () => {
    await ok(['backup', 'vault', 'create', '-n', RSV, '-g', RG, '-l', 'local']);
    const en = await ok(['backup', 'protection', 'enable-for-vm', '--vault-name', RSV, '-g', RG, '--vm', VM, '--policy-name', 'DefaultPolicy'], { shim: true });
    expect(en.json).toMatchObject({ properties: { operation: 'ConfigureBackup', status: 'Completed' } });
    const backup = async (type: string) => {
      const bn = (await ok(['backup', 'protection', 'backup-now', '--vault-name', RSV, '-g', RG, '--container-name', VM, '--item-name', VM, '--backup-management-type', 'AzureIaasVM', '--retain-until', '01-01-2099'])).json as { name: string };
      const job = (await ok(['backup', 'job', 'wait', '--vault-name', RSV, '-g', RG, '-n', bn.name])).json;
      expect(job).toMatchObject({ properties: { operation: 'Backup', status: 'Completed', extendedInfo: { propertyBag: { 'Backup Type': type } } } });
    };
    await backup('Full');
    await guest(VM, 'write', B2.off, B2.data);
    await backup('Incremental');
    const rps = (await ok(['backup', 'recoverypoint', 'list', '--vault-name', RSV, '-g', RG, '--container-name', VM, '--item-name', VM, '--backup-management-type', 'AzureIaasVM'])).json as unknown[];
    expect(rps).toHaveLength(2);
  }, 120_000);

  it('storage account, restore-disks from the latest recovery point', async () => {
    await ok(['storage', 'account', 'create', '-n', SA, '-g', RG, '-l', 'local', '--sku', 'Standard_LRS', '--kind', 'StorageV2']);
    const rps = (await ok(['backup', 'recoverypoint', 'list', '--vault-name', RSV, '-g', RG, '--container-name', VM, '--item-name', VM, '--backup-management-type', 'AzureIaasVM'])).json as { name: string; properties: { recoveryPointTime: string } }[];
    const latest = rps.sort((x, y) => (x.properties.recoveryPointTime < y.properties.recoveryPointTime ? 1 : -1))[0]!;
    const r = (await ok(['backup', 'restore', 'restore-disks', '--vault-name', RSV, '-g', RG, '--container-name', VM, '--item-name', VM, '--rp-name', latest.name, '--storage-account', SA, '--restore-as-unmanaged-disks'])).json as { name: string };
    const job = (await ok(['backup', 'job', 'wait', '--vault-name', RSV, '-g', RG, '-n', r.name])).json as { properties: { status: string; extendedInfo: { propertyBag: Record<string, string> } } };
    expect(job.properties.status).toBe('Completed');
    bag = job.properties.extendedInfo.propertyBag;
    expect(bag['Template Blob Uri']).toMatch(new RegExp(`^https://${SA}\\.blob\\.localhost:${s.port}/`));
  }, 90_000);

  it('storage blob list/download (bearer login): the restored VHD (LUKS), the VM config, the template', async () => {
    const c = bag['Config Blob Container Name']!;
    const list = (await ok(['storage', 'blob', 'list', '--account-name', SA, '-c', c, '--auth-mode', 'login'])).json as { name: string }[];
    expect(list.map((b) => b.name).sort()).toEqual(expect.arrayContaining([bag['Config Blob Name'], bag['Template Blob Uri']!.split('/').pop(), bag['OS Disk Blob Uri']!.split('/').pop()]));
    const get = async (name: string) => {
      const file = path.join(cfg, name);
      await ok(['storage', 'blob', 'download', '--account-name', SA, '-c', c, '-n', name, '-f', file, '--auth-mode', 'login']);
      return file;
    };
    const vhd = await get(bag['OS Disk Blob Uri']!.split('/').pop()!);
    expect(statSync(vhd).size).toBeGreaterThan(16 * MiB);
    expect(readFileSync(vhd).subarray(0, 6).toString('latin1')).toBe('LUKS\xba\xbe');
    expect(JSON.parse(readFileSync(await get(bag['Config Blob Name']!), 'utf8'))).toMatchObject({ name: VM });
    templateFile = await get(bag['Template Blob Uri']!.split('/').pop()!);
    expect(JSON.parse(readFileSync(templateFile, 'utf8'))).toHaveProperty('resources');
  }, 90_000);

  it('deployment group create of the template, vm start, encryption show; the restored disk reads the original bytes', async () => {
    const d = await ok(['deployment', 'group', 'create', '-g', RG, '-n', 'restore-az', '--template-file', templateFile, '--parameters', `VirtualMachineName=${RVM}`]);
    expect(d.json).toMatchObject({ properties: { provisioningState: 'Succeeded' } });
    // `az vm start` cannot load in Debian's az 2.45 even with the shim (it imports azure.mgmt.compute.v2022_11_01):
    // the generic `az resource invoke-action` posts the same …/start action; az looks its api-version up through
    // GET /subscriptions/{s}/providers/Microsoft.Compute (Providers_Get), as it does against Azure.
    await ok(['resource', 'invoke-action', '--action', 'start', '--ids', `${rgId()}/providers/Microsoft.Compute/virtualMachines/${RVM}`]);
    const iv = (await ok(['vm', 'get-instance-view', '-g', RG, '-n', RVM], { shim: true })).json as { instanceView: { statuses: { code: string }[] } };
    expect(iv.instanceView.statuses.map((x) => x.code)).toContain('PowerState/running');
    expect((await ok(['vm', 'encryption', 'show', '-g', RG, '-n', RVM], { shim: true })).json).toMatchObject({ osDisk: 'Encrypted', dataDisk: 'Encrypted' });
    expect((await guest(RVM, 'read', B1.off, undefined, B1.data.length)).toString('hex')).toBe(B1.data.toString('hex'));
    expect((await guest(RVM, 'read', B2.off, undefined, B2.data.length)).toString('hex')).toBe(B2.data.toString('hex'));
  }, 90_000);
});
