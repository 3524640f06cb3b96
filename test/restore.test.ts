/**
 * Restore of an encrypted VM against the real server — the documented story end to end: back up (BEK+KEK), write
 * marker data, delete the VM and purge its KEK and BEK secret → UserErrorKeyAndSecretNotFound; delete the key vault →
 * UserErrorKeyVaultNotFound; recreate it; restore key and secret by the manual SDK flow and by the one command;
 * restore the disks (blobs, and managed disks); create the VM from the template (CLI and templateLink) and by CLI;
 * the restored disks decrypt with qemu-img, with the passphrase an admin unwraps from the restored secret, to exactly
 * the recovery point's plaintext. Then restore-vm without and with the Backup Management Service's authorization.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ClientSecretCredential } from '@azure/identity';
import { CryptographyClient, KeyClient } from '@azure/keyvault-keys';
import { SecretClient } from '@azure/keyvault-secrets';
import { startTestServer, type TestServer } from './helpers/server.js';
import { Fixture, BK_API, KV_API, MiB, env, type Job, type RecoveryPoint } from './recovery-fixture.js';
import { cli, expectErr, get, post, qemuDecrypt } from './restore-helpers.js';

let s: TestServer;
let f: Fixture;
let tmp: string;
let cliEnv: Record<string, string>;
const RG = 'rg-rst';
const suffix = randomBytes(3).toString('hex');
const KV = `kvrst-${suffix}`;
const KV2 = `kvrst2-${suffix}`;
const SA = `strst${suffix}`;
const RSV = 'rsvrst';
const VM = 'vmenc';
const DISK = 8 * MiB;
const bk = { 'api-version': BK_API };
const ST = { 'api-version': '2023-01-01' };
let rpId: string;
let expected: Buffer; // the guest's plaintext at backup time
let rp: RecoveryPoint;

const tls = () => ({ tlsOptions: { ca: s.ca } });
const cred = () => new ClientSecretCredential(s.creds.tenantId, s.creds.clientId, s.creds.clientSecret, { authorityHost: s.origin, disableInstanceDiscovery: true, ...tls() });
const saId = () => `${f.rgPath()}/providers/Microsoft.Storage/storageAccounts/${SA}`;
const rpPath = () => `${f.itemPath(RSV, VM)}/recoveryPoints/${rpId}`;

function restore(props: Record<string, unknown>) {
  return s.client.send('POST', `${rpPath()}/restore`, { query: bk, body: { properties: { objectType: 'IaasVMRestoreRequest', recoveryPointId: rpId, sourceResourceId: f.vmId(VM), ...props } } });
}
async function restoreJob(props: Record<string, unknown>): Promise<Job> {
  const res = await restore(props);
  expect(res.status, JSON.stringify(res.body)).toBe(202);
  expect(String(res.headers['azure-asyncoperation'])).toMatch(/operationsStatus/);
  const st = await f.opStatus(res);
  return f.waitJob(RSV, st.properties!.jobId);
}
/** Admin: unwraps the BEK secret with its KEK (CryptographyClient.unwrapKey) → the LUKS passphrase. */
async function passphraseFrom(secretUrl: string, kekUrl: string): Promise<Buffer> {
  const m = /^https:\/\/([^.]+)\.vault\.localhost(?::\d+)?\/secrets\/([^/]+)\/([^/]+)$/.exec(secretUrl)!;
  const secret = await new SecretClient(`https://${m[1]}.vault.localhost:${s.port}`, cred(), tls()).getSecret(m[2]!, { version: m[3] });
  expect(secret.properties.contentType).toBe('Wrapped BEK');
  const r = await new CryptographyClient(kekUrl, cred(), tls()).unwrapKey('RSA-OAEP', Buffer.from(secret.value!, 'base64url'));
  return Buffer.from(r.result);
}

beforeAll(async () => {
  s = await startTestServer({ env });
  f = new Fixture(s, RG);
  tmp = mkdtempSync(path.join(os.tmpdir(), 'rsv-rst-'));
  cliEnv = { RSVAULT_CONFIG_DIR: path.join(tmp, 'cfg') };
  await f.group();
  await Promise.all([f.keyVault(KV), f.keyVault(KV2, false), f.vm(VM, DISK)]);
  await f.encrypt(VM, KV);
  await f.grantBackup(KV);
  await f.createVault(RSV);
  await f.opStatus(await f.enable(RSV, VM));
  // marker data in the recovery point
  await f.guestWrite(VM, 4096, Buffer.from('MARKER-IN-RECOVERY-POINT'));
  const token = await s.client.token();
  const raw = await post(s, `${s.origin}${f.vmId(VM)}/guestIo/read?api-version=2022-08-01&osDisk=true&offset=0`, Buffer.alloc(0), token);
  expect(raw.status).toBe(200);
  expected = raw.body;
  expect(expected.length).toBe(DISK);
  const st = await f.opStatus(await f.backup(RSV, VM));
  const job = await f.waitJob(RSV, st.properties!.jobId);
  expect(job.properties.status).toBe('Completed');
  rpId = job.properties.extendedInfo.propertyBag['Recovery Point Id']!;
  rp = await s.client.request<RecoveryPoint>('GET', rpPath(), { query: bk });
  // marker data after the recovery point: must not come back
  await f.guestWrite(VM, 4096, Buffer.from('MARKER-AFTER-RECOVERY-POINT'));
  await s.client.request('PUT', saId(), { query: ST, body: { location: 'local', sku: { name: 'Standard_LRS' }, kind: 'StorageV2' } });
  const login = await cli(cliEnv, 'login', '--server', s.origin, '--service-principal', '-u', s.creds.clientId, '-p', s.creds.clientSecret, '--tenant', s.creds.tenantId, '--ca-file', s.creds.caPath);
  expect(login.code, login.stderr).toBe(0);
}, 120_000);

afterAll(async () => {
  await s?.stop();
  if (f) rmSync(f.tmp, { recursive: true, force: true });
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('restore of an encrypted VM: the documented story', () => {
  it('rejects bad restore requests with a code, writes nothing and stays up', async () => {
    const bad = async (props: Record<string, unknown> | undefined, status: number, code: string, msg?: RegExp) => {
      const res = props === undefined ? await s.client.send('POST', `${rpPath()}/restore`, { query: bk, body: { nope: 1 } }) : await restore(props);
      const e = (res.body as { error: { code: string; message: string } }).error;
      expect({ status: res.status, code: e.code }, JSON.stringify(e)).toEqual({ status, code });
      if (msg) expect(e.message).toMatch(msg);
    };
    await bad(undefined, 400, 'InvalidRequestContent');
    await bad({ recoveryType: 'Teleport', storageAccountId: saId() }, 400, 'InvalidRequestContent', /recoveryType/);
    await bad({ recoveryType: 'RestoreDisks' }, 400, 'InvalidRequestContent', /storageAccountId/);
    await bad({ recoveryType: 'RestoreDisks', storageAccountId: 'not-an-id' }, 400, 'InvalidRequestContent', /storage account id/);
    await bad({ recoveryType: 'RestoreDisks', storageAccountId: `${f.rgPath()}/providers/Microsoft.Storage/storageAccounts/nosuchacct` }, 404, 'UserErrorStorageAccountNotFound', /nosuchacct/);
    await bad({ recoveryType: 'RestoreDisks', storageAccountId: saId(), recoveryPointId: '123' }, 400, 'InvalidRequestContent', /does not match/);
    await bad({ recoveryType: 'RestoreDisks', storageAccountId: saId(), targetResourceGroupId: `/subscriptions/${f.sub}/resourceGroups/nope` }, 404, 'ResourceGroupNotFound');
    await bad({ recoveryType: 'RestoreDisks', storageAccountId: saId(), encryptionDetails: { encryptionEnabled: true, secretKeyUrl: 'https://x/notasecret' } }, 400, 'InvalidRequestContent', /secretKeyUrl/);
    await bad({ recoveryType: 'OriginalLocation' }, 400, 'UserErrorOriginalLocationRestoreNotSupportedForEncryptedVm', /OriginalLocation/);
    await bad({ recoveryType: 'AlternateLocation', storageAccountId: saId() }, 400, 'InvalidRequestContent', /targetVirtualMachineId/);
    const missingRp = await s.client.send('POST', `${f.itemPath(RSV, VM)}/recoveryPoints/999/restore`, { query: bk, body: { properties: { objectType: 'IaasVMRestoreRequest', recoveryType: 'RestoreDisks', storageAccountId: saId() } } });
    expect(missingRp.status).toBe(404);
    expect((missingRp.body as { error: { code: string } }).error.code).toBe('UserErrorRecoveryPointNotFound');
    expect(readdirSync(path.join(s.dataDir, 'storage', SA)).filter((x) => x !== '.staging')).toEqual([]);
    const jobs = await s.client.list<Job>(`${f.vaultPath(RSV)}/backupJobs`, { query: { ...bk, $filter: "operation eq 'Restore'" } });
    expect(jobs).toEqual([]);
    expect((await get(s, `${s.origin}/healthz`)).status).toBe(200);
  });

  it('VM deleted, KEK and BEK secret purged → UserErrorKeyAndSecretNotFound naming both and the fixing command', async () => {
    await s.client.request('DELETE', f.vmId(VM), { query: { 'api-version': '2022-08-01' } });
    const kek = rp.properties.keyAndSecret!.kekDetails!.keyUrl;
    const sec = rp.properties.keyAndSecret!.bekDetails.secretUrl;
    const secretName = sec.split('/')[4]!;
    await f.kv(KV, 'DELETE', '/keys/kek');
    await f.kv(KV, 'DELETE', '/deletedkeys/kek');
    await f.kv(KV, 'DELETE', `/secrets/${secretName}`);
    await f.kv(KV, 'DELETE', `/deletedsecrets/${secretName}`);
    const res = await restore({ recoveryType: 'RestoreDisks', storageAccountId: saId() });
    expect(res.status).toBe(400);
    const e = (res.body as { error: { code: string; message: string; additionalInfo: { info: { text: string } }[] } }).error;
    expect(e.code).toBe('UserErrorKeyAndSecretNotFound');
    expect(e.message).toContain(kek);
    expect(e.message).toContain(sec);
    expect(e.additionalInfo[0]!.info.text).toMatch(new RegExp(`rsvault backup restore restore-keys --vault-name ${RSV} -g ${RG} .*--rp-name ${rpId}`));
  });

  it('key vault deleted → UserErrorKeyVaultNotFound naming the vault', async () => {
    await s.client.request('DELETE', f.kvId(KV), { query: { 'api-version': KV_API } });
    const e = await expectErr(s.client.request('POST', `${rpPath()}/restore`, { query: bk, body: { properties: { objectType: 'IaasVMRestoreRequest', recoveryType: 'RestoreDisks', storageAccountId: saId() } } }));
    expect(e.code).toBe('UserErrorKeyVaultNotFound');
    expect(e.message).toContain(f.kvId(KV));
    expect(e.recommendation).toMatch(/restore-keys/);
  });

  it('recreate the vault; manual SDK flow: restoreKeyBackup, then setSecret("Wrapped BEK", four ADE tags); restore disks to blobs; the disk decrypts to the recovery point', async () => {
    await s.client.request('POST', `/subscriptions/${f.sub}/providers/Microsoft.KeyVault/locations/local/deletedVaults/${KV}/purge`, { query: { 'api-version': KV_API } });
    await f.keyVault(KV, false);
    const ks = rp.properties.keyAndSecret!;
    const keys = new KeyClient(`https://${KV}.vault.localhost:${s.port}`, cred(), tls());
    const restoredKey = await keys.restoreKeyBackup(Buffer.from(ks.kekDetails!.keyBackupData, 'base64'));
    const kekUrl = restoredKey.id!;
    expect(kekUrl).toBe(ks.kekDetails!.keyUrl); // same name and version, the same reachable URL
    const secretName = ks.bekDetails.secretUrl.split('/')[4]!;
    const secrets = new SecretClient(`https://${KV}.vault.localhost:${s.port}`, cred(), tls());
    const set = await secrets.setSecret(secretName, ks.bekDetails.secretData, {
      contentType: 'Wrapped BEK',
      tags: { DiskEncryptionKeyEncryptionAlgorithm: 'RSA-OAEP', DiskEncryptionKeyFileName: 'LinuxPassPhraseFileName', DiskEncryptionKeyEncryptionKeyURL: restoredKey.id!, MachineName: VM },
    });
    const secretUrl = set.properties.id!;
    // The recorded secret version is gone for good: the default restore still names it.
    const still = await expectErr(s.client.request('POST', `${rpPath()}/restore`, { query: bk, body: { properties: { objectType: 'IaasVMRestoreRequest', recoveryType: 'RestoreDisks', storageAccountId: saId() } } }));
    expect(still.code).toBe('UserErrorKeyAndSecretNotFound');
    expect(still.message).toContain(ks.bekDetails.secretUrl);
    expect(still.message).not.toContain(ks.kekDetails!.keyUrl);

    const job = await restoreJob({ recoveryType: 'RestoreDisks', storageAccountId: saId(), region: 'local', encryptionDetails: { encryptionEnabled: true, kekUrl, secretKeyUrl: secretUrl, kekVaultId: f.kvId(KV), secretKeyVaultId: f.kvId(KV) } });
    expect(job.properties, JSON.stringify(job.properties.errorDetails)).toMatchObject({ operation: 'Restore', status: 'Completed' });
    const bag = job.properties.extendedInfo.propertyBag;
    expect(bag).toMatchObject({ 'Target Storage Account Name': SA });
    for (const k of ['Config Blob Container Name', 'Config Blob Name', 'Encryption Info Blob Name', 'Template Blob Uri']) expect(bag[k], k).toBeTruthy();
    expect(job.properties.extendedInfo.tasksList[0]).toMatchObject({ taskId: 'Transfer data', status: 'Completed' });
    expect(job.properties.extendedInfo.progressPercentage).toBe(100);

    // Every output downloads with a bearer token, or with a SAS the API hands out; never anonymously.
    const token = await s.client.token();
    const blob = (name: string) => `${s.origin}/blob/${SA}/${bag['Config Blob Container Name']}/${name}`;
    const encInfo = JSON.parse((await get(s, blob(bag['Encryption Info Blob Name']!), token)).body.toString()) as { OsDiskKeyAndSecretDetails: Record<string, string> };
    expect(encInfo.OsDiskKeyAndSecretDetails).toMatchObject({ KeyUrl: ks.kekDetails!.keyUrl, SecretUrl: ks.bekDetails.secretUrl, SecretData: ks.bekDetails.secretData });
    expect(Buffer.from(encInfo.OsDiskKeyAndSecretDetails.KeyBackupData!, 'base64').equals(Buffer.from(ks.kekDetails!.keyBackupData, 'base64url'))).toBe(true);
    const config = JSON.parse((await get(s, blob(bag['Config Blob Name']!), token)).body.toString()) as Record<string, { vmSize?: string; osDisk?: { vhd: { uri: string } } }>;
    expect(config['properties.hardwareProfile']!.vmSize).toBe('Standard_DS1_v2');
    const osUri = config['properties.storageProfile']!.osDisk!.vhd.uri;
    expect(osUri).toBe(bag['OS Disk Blob Uri']);
    expect((await get(s, bag['Template Blob Uri']!)).status).toBe(401);
    const sas = await s.client.request<{ serviceSasToken: string }>('POST', `${saId()}/listServiceSas`, { query: ST, body: { canonicalizedResource: `/blob/${SA}${new URL(osUri).pathname}`, signedResource: 'b', signedPermission: 'r', signedExpiry: new Date(Date.now() + 600_000).toISOString() } });
    const disk = await get(s, `${osUri}?${sas.serviceSasToken}`);
    expect(disk.status).toBe(200);
    expect((await get(s, `${osUri}?${sas.serviceSasToken.replace(/sig=[^&]+/, 'sig=AAAA')}`)).status).toBe(403);
    const img = path.join(tmp, 'os-manual.img');
    writeFileSync(img, disk.body);
    const plain = qemuDecrypt(img, await passphraseFrom(secretUrl, kekUrl), tmp);
    expect(plain.equals(expected)).toBe(true);
    expect(plain.includes(Buffer.from('MARKER-IN-RECOVERY-POINT'))).toBe(true);
    expect(plain.includes(Buffer.from('MARKER-AFTER-RECOVERY-POINT'))).toBe(false);

    // Create the VM from the template: with the CLI from the downloaded file, and by API through templateLink + SAS.
    const tpl = path.join(tmp, 'template.json');
    const dl = await cli(cliEnv, 'storage', 'blob', 'download', '--url', bag['Template Blob Uri']!, '-f', tpl);
    expect(dl.code, dl.stderr).toBe(0);
    const dep = await cli(cliEnv, 'deployment', 'group', 'create', '-g', RG, '--template-file', tpl, '--parameters', 'VirtualMachineName=vmtpl', '-o', 'json');
    expect(dep.code, dep.stderr + dep.stdout).toBe(0);
    expect((dep.json as { properties: { provisioningState: string; outputResources: { id: string }[] } }).properties).toMatchObject({ provisioningState: 'Succeeded' });
    const vm = await s.client.request<{ properties: { storageProfile: { osDisk: { managedDisk: { id: string }; encryptionSettings: { diskEncryptionKey: { secretUrl: string } } } } } }>('GET', f.vmId('vmtpl'), { query: { 'api-version': '2022-08-01' } });
    expect(vm.properties.storageProfile.osDisk.encryptionSettings.diskEncryptionKey.secretUrl).toBe(secretUrl);
    const tsas = await s.client.request<{ serviceSasToken: string }>('POST', `${saId()}/listServiceSas`, { query: ST, body: { canonicalizedResource: `/blob/${SA}${new URL(bag['Template Blob Uri']!).pathname}`, signedPermission: 'r', signedExpiry: new Date(Date.now() + 600_000).toISOString() } });
    const put = await s.client.send('PUT', `${f.rgPath()}/providers/Microsoft.Resources/deployments/fromlink`, { query: { 'api-version': '2021-04-01' }, body: { properties: { mode: 'Incremental', templateLink: { uri: `${bag['Template Blob Uri']}?${tsas.serviceSasToken}` }, parameters: { VirtualMachineName: { value: 'vmlink' } } } } });
    expect(put.status, JSON.stringify(put.body)).toBe(201);
    await s.client.waitForOperation(put, { intervalMs: 100, timeoutMs: 30_000 });
    const d = await s.client.request<{ properties: { provisioningState: string; outputResources: { id: string }[] } }>('GET', `${f.rgPath()}/providers/Microsoft.Resources/deployments/fromlink`, { query: { 'api-version': '2021-04-01' } });
    expect(d.properties.provisioningState).toBe('Succeeded');
    expect(d.properties.outputResources.map((r) => r.id.split('/').pop())).toEqual(['vmlink-osdisk', 'vmlink']);
  });

  it('the one command restores key then secret into another vault and prints the URLs; restore-disks as managed disks; vm create by CLI; the disk decrypts', async () => {
    const r = await cli(cliEnv, 'backup', 'restore', 'restore-keys', '-v', RSV, '-g', RG, '-c', VM, '-i', VM, '-r', rpId, '--target-key-vault', KV2, '-o', 'json');
    expect(r.code, r.stderr).toBe(0);
    const out = r.json as { keyUrl: string; secretUrl: string; keyVaultId: string };
    expect(out.keyUrl).toMatch(new RegExp(`^https://${KV2}\\.vault\\.localhost:${s.port}/keys/kek/`));
    expect(out.secretUrl).toMatch(new RegExp(`^https://${KV2}\\.vault\\.localhost:${s.port}/secrets/`));
    expect(r.stderr).toMatch(/Next: rsvault backup restore restore-disks/);
    const secret = await new SecretClient(`https://${KV2}.vault.localhost:${s.port}`, cred(), tls()).getSecret(out.secretUrl.split('/')[4]!);
    expect(secret.properties.tags).toMatchObject({ DiskEncryptionKeyEncryptionKeyURL: out.keyUrl, DiskEncryptionKeyEncryptionAlgorithm: 'RSA-OAEP', DiskEncryptionKeyFileName: 'LinuxPassPhraseFileName', MachineName: VM });
    // twice: the key is already there with the same version → reused, a new secret version
    const again = await cli(cliEnv, 'backup', 'restore', 'restore-keys', '-v', RSV, '-g', RG, '-c', VM, '-i', VM, '-r', rpId, '--target-key-vault', KV2, '-o', 'json');
    expect(again.code, again.stderr).toBe(0);
    expect((again.json as { keyUrl: string }).keyUrl).toBe(out.keyUrl);

    const rd = await cli(cliEnv, 'backup', 'restore', 'restore-disks', '-v', RSV, '-g', RG, '-c', VM, '-i', VM, '-r', rpId, '--storage-account', SA, '--target-resource-group', RG, '--kek-url', out.keyUrl, '--secret-url', out.secretUrl, '--key-vault-id', KV2, '-o', 'json');
    expect(rd.code, rd.stderr).toBe(0);
    const job = rd.json as Job;
    expect(job.properties.status).toBe('Completed');
    const diskId = job.properties.extendedInfo.propertyBag['OS Disk Id']!;
    expect(diskId).toMatch(/Microsoft\.Compute\/disks\//);
    const show = await cli(cliEnv, 'backup', 'job', 'show', '-v', RSV, '-g', RG, '-n', job.name, '-o', 'json');
    expect(show.code).toBe(0);
    expect(show.stderr).toMatch(/Template Blob Uri: https:/);
    expect(show.stderr).toMatch(/rsvault vm create -g rg-rst -n <new VM name> --attach-os-disk \S+ --os-type Linux --encryption-secret-url \S+ --encryption-key-url \S+/);
    const disk = await s.client.request<{ properties: { encryptionSettingsCollection: { encryptionSettings: { diskEncryptionKey: { secretUrl: string } }[] } } }>('GET', diskId, { query: { 'api-version': '2022-08-01' } });
    expect(disk.properties.encryptionSettingsCollection.encryptionSettings[0]!.diskEncryptionKey.secretUrl).toBe(out.secretUrl);

    const vc = await cli(cliEnv, 'vm', 'create', '-g', RG, '-n', 'vmcli', '--attach-os-disk', diskId, '--os-type', 'Linux', '--encryption-secret-url', out.secretUrl, '--encryption-key-url', out.keyUrl, '-o', 'json');
    expect(vc.code, vc.stderr).toBe(0);
    expect((vc.json as { properties: { storageProfile: { osDisk: { encryptionSettings: { keyEncryptionKey: { keyUrl: string } } } } } }).properties.storageProfile.osDisk.encryptionSettings.keyEncryptionKey.keyUrl).toBe(out.keyUrl);
    await s.client.waitForOperation(await s.client.send('DELETE', f.vmId('vmcli'), { query: { 'api-version': '2022-08-01' } }), { intervalMs: 100 }); // exporting needs a detached disk
    const grant = await s.client.request<{ accessSAS: string }>('POST', `${diskId}/beginGetAccess`, { query: { 'api-version': '2022-08-01' }, body: { access: 'Read', durationInSeconds: 600 } });
    const bytes = await get(s, grant.accessSAS);
    expect(bytes.status).toBe(200);
    const img = path.join(tmp, 'os-cli.img');
    writeFileSync(img, bytes.body);
    expect(qemuDecrypt(img, await passphraseFrom(out.secretUrl, out.keyUrl), tmp).equals(expected)).toBe(true);
    await s.client.request('POST', `${diskId}/endGetAccess`, { query: { 'api-version': '2022-08-01' } });
  });
});

describe('restore-vm (AlternateLocation) for an encrypted VM', () => {
  it('without authorization → UserErrorBackupServiceNotAuthorized recommending restore-disks; after the grant the VM is created and its disk verifies', async () => {
    const secretUrl = (await cli(cliEnv, 'backup', 'restore', 'restore-keys', '-v', RSV, '-g', RG, '-c', VM, '-i', VM, '-r', rpId, '--target-key-vault', KV2, '-o', 'json')).json as { keyUrl: string; secretUrl: string };
    const args = ['backup', 'restore', 'restore-vm', '-v', RSV, '-g', RG, '-c', VM, '-i', VM, '-r', rpId, '--storage-account', SA, '--target-resource-group', RG, '--target-vm-name', 'vmalt', '--kek-url', secretUrl.keyUrl, '--secret-url', secretUrl.secretUrl, '--key-vault-id', KV2];
    const denied = await cli(cliEnv, ...args);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(/ERROR: \(UserErrorBackupServiceNotAuthorized\)/);
    expect(denied.stderr).toMatch(/rsvault backup restore restore-disks/);
    expect(denied.stderr).toMatch(/Microsoft\.KeyVault\/vaults\/deploy\/action/);
    expect((await s.client.send('GET', f.vmId('vmalt'), { query: { 'api-version': '2022-08-01' } })).status).toBe(404);

    // Grant: Contributor on the target resource group (it holds the key vault too).
    const bms = await f.bmsObjectId();
    const roles = await s.client.request<{ value: { id: string }[] }>('GET', `/subscriptions/${f.sub}/providers/Microsoft.Authorization/roleDefinitions`, { query: { 'api-version': '2022-04-01', $filter: "roleName eq 'Contributor'" } });
    await s.client.request('PUT', `${f.rgPath()}/providers/Microsoft.Authorization/roleAssignments/${randomBytes(16).toString('hex').replace(/(.{8})(.{4})(.{4})(.{4})(.{12})/, '$1-$2-$3-$4-$5')}`, { query: { 'api-version': '2022-04-01' }, body: { properties: { roleDefinitionId: roles.value[0]!.id, principalId: bms } } });
    const ok = await cli(cliEnv, ...args, '-o', 'json');
    expect(ok.code, ok.stderr).toBe(0);
    const job = ok.json as Job;
    expect(job.properties.status).toBe('Completed');
    expect(job.properties.extendedInfo.tasksList.map((t) => [t.taskId, t.status])).toEqual([['Transfer data', 'Completed'], ['Create VM', 'Completed']]);
    const vm = await s.client.request<{ properties: { storageProfile: { osDisk: { managedDisk: { id: string } } } } }>('GET', f.vmId('vmalt'), { query: { 'api-version': '2022-08-01' } });
    const diskId = vm.properties.storageProfile.osDisk.managedDisk.id;
    await s.client.waitForOperation(await s.client.send('DELETE', f.vmId('vmalt'), { query: { 'api-version': '2022-08-01' } }), { intervalMs: 100 }); // exporting needs a detached disk
    const grant = await s.client.request<{ accessSAS: string }>('POST', `${diskId}/beginGetAccess`, { query: { 'api-version': '2022-08-01' }, body: { access: 'Read', durationInSeconds: 600 } });
    const img = path.join(tmp, 'os-alt.img');
    writeFileSync(img, (await get(s, grant.accessSAS)).body);
    expect(qemuDecrypt(img, await passphraseFrom(secretUrl.secretUrl, secretUrl.keyUrl), tmp).equals(expected)).toBe(true);
    expect(existsSync(path.join(s.dataDir, 'restore-tmp', job.name))).toBe(false);
  });
});
