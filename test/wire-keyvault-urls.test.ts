/**
 * Issue #13 item 4: every Key Vault URL rsvault hands out is one a client can reach — the vault's `vaultUri`, key
 * `kid` / secret `id`, the VM's and the disk's ADE encryption settings, the BEK's KEK tag, a recovery point's
 * `keyAndSecret` and the restore outputs (encryption-info JSON, VM config JSON, ARM template) all carry
 * `https://{vault}.vault.localhost:{port}/…`. Proven with the official clients fetching by exactly those URLs:
 * `@azure/keyvault-secrets` / `-keys` (JS), Debian python3-azure `SecretClient` + `KeyVaultSecretIdentifier`, and az
 * 2.45 (`az keyvault show`, `az vm show`). URLs stored before without the port still resolve (read in their
 * reachable form); `--keyvault-public-port 443` + `--keyvault-host-suffix` give port-less URLs on another suffix
 * (a reverse proxy on 443).
 *
 * Not covered by az: `az keyvault secret show --id <url>` cannot run on Debian's azure-cli 2.45 at all (it crashes at
 * import, `No module named 'azure.keyvault.v7_0'`, a packaging bug: ../shared/design/reference/azure-cli.md caveat 2),
 * so the Python SDK stands in for it; the test asserts that crash so the day it is fixed the az check can be added.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { ClientSecretCredential } from '@azure/identity';
import { KeyClient } from '@azure/keyvault-keys';
import { SecretClient, parseKeyVaultSecretIdentifier } from '@azure/keyvault-secrets';
import { runCli, startTestServer, type TestServer } from './helpers/server.js';
import { azSession, SHIM, type AzSession } from './helpers/az.js';
import { Fixture, BK_API, COMPUTE_API, KV_API, MiB, env, type Job, type RecoveryPoint } from './recovery-fixture.js';
import { get } from './restore-helpers.js';

let s: TestServer;
let f: Fixture;
const RG = 'rg-kvurl';
const sfx = randomBytes(3).toString('hex');
const KV = `kvurl-${sfx}`;
const SA = `stkvurl${sfx}`;
const RSV = 'rsvkvurl';
const VM = 'vmkvurl';
let rp: RecoveryPoint;
let rpId: string;

type VmModel = { properties: { storageProfile: { osDisk: { managedDisk: { id: string }; encryptionSettings?: { diskEncryptionKey: { secretUrl: string }; keyEncryptionKey: { keyUrl: string } } } } } };
type DiskModel = { properties: { encryptionSettingsCollection: { encryptionSettings: { diskEncryptionKey: { secretUrl: string }; keyEncryptionKey: { keyUrl: string } }[] } } };

const tls = () => ({ tlsOptions: { ca: s.ca } });
const cred = () => new ClientSecretCredential(s.creds.tenantId, s.creds.clientId, s.creds.clientSecret, { authorityHost: s.origin, disableInstanceDiscovery: true, ...tls() });
const reachable = (coll: 'secrets' | 'keys') => new RegExp(`^https://${KV}\\.vault\\.localhost:${s.port}/${coll}/[^/]+/[0-9a-f]{32}$`);

/** @azure/keyvault-secrets: the secret behind exactly this URL (the SDK's own identifier parser picks vault, name, version). */
async function sdkSecret(url: string) {
  const id = parseKeyVaultSecretIdentifier(url);
  return new SecretClient(id.vaultUrl, cred(), tls()).getSecret(id.name, { version: id.version });
}

/** Debian python3-azure: KeyVaultSecretIdentifier(url) → SecretClient(vault_url).get_secret(name, version). */
function pySecret(url: string): { contentType: string; id: string } {
  const script = `
import sys, json
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient, KeyVaultSecretIdentifier
port, client_id, secret, ca, url = sys.argv[1:6]
cred = ClientSecretCredential(tenant_id='adfs', client_id=client_id, client_secret=secret, authority='https://localhost:' + port, disable_instance_discovery=True, connection_verify=ca)
i = KeyVaultSecretIdentifier(url)
g = SecretClient(vault_url=i.vault_url, credential=cred, connection_verify=ca).get_secret(i.name, i.version)
print(json.dumps({'contentType': g.properties.content_type, 'id': g.id}))
`;
  const r = spawnSync('/usr/bin/python3', ['-c', script, String(s.port), s.creds.clientId, s.creds.clientSecret, s.creds.caPath, url], { env: { ...process.env, REQUESTS_CA_BUNDLE: s.creds.caPath, PYTHONPATH: '' }, encoding: 'utf8', timeout: 60_000 });
  expect(r.stderr).not.toMatch(/Traceback/);
  return JSON.parse(r.stdout.trim()) as { contentType: string; id: string };
}

let azs: AzSession;
const az: AzSession['az'] = (args, o) => azs.az(args, o);

beforeAll(async () => {
  if (!SHIM) throw new Error('the az compute shim (../shared/tools/az-compute-shim) was not found: set RSVAULT_AZ_SHIM');
  s = await startTestServer({ env });
  f = new Fixture(s, RG);
  await f.group();
  await f.keyVault(KV);
  await f.vm(VM, 4 * MiB);
  await f.encrypt(VM, KV);
  await f.grantBackup(KV);
  await f.createVault(RSV);
  await f.opStatus(await f.enable(RSV, VM));
  const st = await f.opStatus(await f.backup(RSV, VM));
  const job = await f.waitJob(RSV, st.properties!.jobId);
  expect(job.properties.status).toBe('Completed');
  rpId = job.properties.extendedInfo.propertyBag['Recovery Point Id']!;
  rp = await s.client.request<RecoveryPoint>('GET', `${f.itemPath(RSV, VM)}/recoveryPoints/${rpId}`, { query: { 'api-version': BK_API } });

  azs = await azSession(s, { requireShim: true, cloudName: 'RsvKvUrl', prefix: 'rsv-kvurl-az-' });
}, 180_000);

afterAll(async () => {
  await s?.stop();
  azs?.close();
  if (f) rmSync(f.tmp, { recursive: true, force: true });
});

describe('Key Vault URLs are the URLs clients can reach (issue #13 item 4)', () => {
  it('vaultUri, the VM and disk encryption settings, the BEK tag and the key id carry the port; the SDKs fetch by exactly those URLs', async () => {
    const vault = await s.client.request<{ properties: { vaultUri: string } }>('GET', f.kvId(KV), { query: { 'api-version': KV_API } });
    expect(vault.properties.vaultUri).toBe(`https://${KV}.vault.localhost:${s.port}/`);
    const vm = await s.client.request<VmModel>('GET', f.vmId(VM), { query: { 'api-version': COMPUTE_API } });
    const es = vm.properties.storageProfile.osDisk.encryptionSettings!;
    expect(es.diskEncryptionKey.secretUrl).toMatch(reachable('secrets'));
    expect(es.keyEncryptionKey.keyUrl).toMatch(reachable('keys'));
    const disk = await s.client.request<DiskModel>('GET', vm.properties.storageProfile.osDisk.managedDisk.id, { query: { 'api-version': COMPUTE_API } });
    expect(disk.properties.encryptionSettingsCollection.encryptionSettings[0]).toMatchObject({ diskEncryptionKey: { secretUrl: es.diskEncryptionKey.secretUrl }, keyEncryptionKey: { keyUrl: es.keyEncryptionKey.keyUrl } });

    const secret = await sdkSecret(es.diskEncryptionKey.secretUrl);
    expect(secret.properties.id).toBe(es.diskEncryptionKey.secretUrl);
    expect(secret.properties.contentType).toBe('Wrapped BEK');
    expect(secret.properties.tags!.DiskEncryptionKeyEncryptionKeyURL).toBe(es.keyEncryptionKey.keyUrl);
    const kek = await new KeyClient(`https://${KV}.vault.localhost:${s.port}`, cred(), tls()).getKey('kek', { version: es.keyEncryptionKey.keyUrl.split('/').pop() });
    expect(kek.id).toBe(es.keyEncryptionKey.keyUrl);
    expect(pySecret(es.diskEncryptionKey.secretUrl)).toEqual({ contentType: 'Wrapped BEK', id: es.diskEncryptionKey.secretUrl });
  });

  it("a recovery point's keyAndSecret names the same reachable URLs", async () => {
    const vm = await s.client.request<VmModel>('GET', f.vmId(VM), { query: { 'api-version': COMPUTE_API } });
    const ks = rp.properties.keyAndSecret!;
    expect(ks.bekDetails.secretUrl).toBe(vm.properties.storageProfile.osDisk.encryptionSettings!.diskEncryptionKey.secretUrl);
    expect(ks.kekDetails!.keyUrl).toBe(vm.properties.storageProfile.osDisk.encryptionSettings!.keyEncryptionKey.keyUrl);
    const secret = await sdkSecret(ks.bekDetails.secretUrl);
    expect(secret.value).toBe(ks.bekDetails.secretData);
    expect(pySecret(ks.bekDetails.secretUrl).contentType).toBe('Wrapped BEK');
  });

  it('az 2.45: keyvault show and vm show print the reachable URLs; az keyvault secret show cannot run on Debian (packaging bug)', async () => {
    const kv = await az(['keyvault', 'show', '-n', KV, '-g', RG]);
    expect(kv.code, kv.err).toBe(0);
    expect((kv.json as { properties: { vaultUri: string } }).properties.vaultUri).toBe(`https://${KV}.vault.localhost:${s.port}/`);
    const vm = await az(['vm', 'show', '-g', RG, '-n', VM], { shim: true });
    expect(vm.code, vm.err).toBe(0);
    const es = (vm.json as { storageProfile: { osDisk: { encryptionSettings: { diskEncryptionKey: { secretUrl: string } } } } }).storageProfile.osDisk.encryptionSettings;
    expect(es.diskEncryptionKey.secretUrl).toMatch(reachable('secrets'));
    const show = await az(['keyvault', 'secret', 'show', '--id', es.diskEncryptionKey.secretUrl]);
    expect(show.code).not.toBe(0);
    expect(show.err).toMatch(/No module named 'azure\.keyvault\.v7_0'/);
  }, 60_000);

  it('restore outputs (encryption info, VM config, template, job bag) carry the reachable URLs and the SDK fetches the BEK by them', async () => {
    await s.client.request('PUT', `${f.rgPath()}/providers/Microsoft.Storage/storageAccounts/${SA}`, { query: { 'api-version': '2023-01-01' }, body: { location: 'local', sku: { name: 'Standard_LRS' }, kind: 'StorageV2' } });
    const res = await s.client.send('POST', `${f.itemPath(RSV, VM)}/recoveryPoints/${rpId}/restore`, { query: { 'api-version': BK_API }, body: { properties: { objectType: 'IaasVMRestoreRequest', recoveryType: 'RestoreDisks', recoveryPointId: rpId, sourceResourceId: f.vmId(VM), storageAccountId: `${f.rgPath()}/providers/Microsoft.Storage/storageAccounts/${SA}` } } });
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    const job: Job = await f.waitJob(RSV, (await f.opStatus(res)).properties!.jobId);
    expect(job.properties.status, JSON.stringify(job.properties.errorDetails)).toBe('Completed');
    const bag = job.properties.extendedInfo.propertyBag;
    expect(bag['Secret Url']).toBe(rp.properties.keyAndSecret!.bekDetails.secretUrl);
    expect(bag['Key Url']).toBe(rp.properties.keyAndSecret!.kekDetails!.keyUrl);
    const token = await s.client.token();
    const blob = async (name: string) => JSON.parse((await get(s, `${s.origin}/blob/${SA}/${bag['Config Blob Container Name']}/${name}`, token)).body.toString()) as Record<string, unknown>;
    const enc = (await blob(bag['Encryption Info Blob Name']!)) as { OsDiskKeyAndSecretDetails: { SecretUrl: string; KeyUrl: string; SecretTags: Record<string, string> } };
    expect(enc.OsDiskKeyAndSecretDetails.SecretUrl).toMatch(reachable('secrets'));
    expect(enc.OsDiskKeyAndSecretDetails.KeyUrl).toMatch(reachable('keys'));
    expect(enc.OsDiskKeyAndSecretDetails.SecretTags.DiskEncryptionKeyEncryptionKeyURL).toBe(enc.OsDiskKeyAndSecretDetails.KeyUrl);
    expect((await sdkSecret(enc.OsDiskKeyAndSecretDetails.SecretUrl)).properties.id).toBe(enc.OsDiskKeyAndSecretDetails.SecretUrl);
    const config = (await blob(bag['Config Blob Name']!)) as Record<string, { osDisk: { encryptionSettings: { diskEncryptionKey: { secretUrl: string }; keyEncryptionKey: { keyUrl: string } } } }>;
    expect(config['properties.storageProfile']!.osDisk.encryptionSettings.diskEncryptionKey.secretUrl).toBe(enc.OsDiskKeyAndSecretDetails.SecretUrl);
    expect(config['properties.storageProfile']!.osDisk.encryptionSettings.keyEncryptionKey.keyUrl).toBe(enc.OsDiskKeyAndSecretDetails.KeyUrl);
    const tpl = JSON.stringify(await blob(new URL(bag['Template Blob Uri']!).pathname.split('/').pop()!));
    const urls = [...tpl.matchAll(/https:\/\/[^"]*\.vault\.localhost[^"]*/g)].map((m) => m[0]);
    expect(urls.length).toBeGreaterThanOrEqual(2);
    for (const u of urls) expect(u).toMatch(new RegExp(`^https://${KV}\\.vault\\.localhost:${s.port}/(secrets|keys)/`));
  });

  it('URLs stored before without the port resolve: read back in their reachable form, accepted in restore requests', async () => {
    const es = rp.properties.keyAndSecret!;
    const portless = (u: string) => u.replace(`:${s.port}/`, '/');
    // A VM whose stored settings carry the old port-less URLs (as rsvault wrote them before), on a plain disk.
    const disk = `${f.rgPath()}/providers/Microsoft.Compute/disks/legacy-os`;
    await s.client.request('PUT', disk, { query: { 'api-version': COMPUTE_API }, body: { location: 'local', properties: { creationData: { createOption: 'Empty' }, diskSizeGB: 1, encryptionSettingsCollection: { enabled: true, encryptionSettingsVersion: '1.1', encryptionSettings: [{ diskEncryptionKey: { sourceVault: { id: f.kvId(KV) }, secretUrl: portless(es.bekDetails.secretUrl) } }] } } } });
    await s.client.request('PUT', f.vmId('legacy'), { query: { 'api-version': COMPUTE_API }, body: { location: 'local', properties: { hardwareProfile: { vmSize: 'Standard_DS1_v2' }, storageProfile: { osDisk: { osType: 'Linux', createOption: 'Attach', managedDisk: { id: disk }, encryptionSettings: { enabled: true, diskEncryptionKey: { sourceVault: { id: f.kvId(KV) }, secretUrl: portless(es.bekDetails.secretUrl) }, keyEncryptionKey: { sourceVault: { id: f.kvId(KV) }, keyUrl: portless(es.kekDetails!.keyUrl) } } }, dataDisks: [] } } } });
    const vm = await s.client.request<VmModel>('GET', f.vmId('legacy'), { query: { 'api-version': COMPUTE_API } });
    expect(vm.properties.storageProfile.osDisk.encryptionSettings).toMatchObject({ diskEncryptionKey: { secretUrl: es.bekDetails.secretUrl }, keyEncryptionKey: { keyUrl: es.kekDetails!.keyUrl } });
    expect((await s.client.request<DiskModel>('GET', disk, { query: { 'api-version': COMPUTE_API } })).properties.encryptionSettingsCollection.encryptionSettings[0]!.diskEncryptionKey.secretUrl).toBe(es.bekDetails.secretUrl);
    // A restore request naming the port-less URLs restores with the reachable ones.
    const res = await s.client.send('POST', `${f.itemPath(RSV, VM)}/recoveryPoints/${rpId}/restore`, { query: { 'api-version': BK_API }, body: { properties: { objectType: 'IaasVMRestoreRequest', recoveryType: 'RestoreDisks', recoveryPointId: rpId, sourceResourceId: f.vmId(VM), storageAccountId: `${f.rgPath()}/providers/Microsoft.Storage/storageAccounts/${SA}`, encryptionDetails: { encryptionEnabled: true, kekUrl: portless(es.kekDetails!.keyUrl), secretKeyUrl: portless(es.bekDetails.secretUrl) } } } });
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    const job = await f.waitJob(RSV, (await f.opStatus(res)).properties!.jobId);
    expect(job.properties.status, JSON.stringify(job.properties.errorDetails)).toBe('Completed');
    expect(job.properties.extendedInfo.propertyBag['Secret Url']).toBe(es.bekDetails.secretUrl);
  });

  it('--keyvault-public-port 443 and --keyvault-host-suffix (a reverse proxy on 443): port-less URLs on that suffix; documented in --help; bad values exit 2', async () => {
    const help = await runCli(['serve', '--help']);
    expect(help.stdout).toMatch(/--keyvault-host-suffix/);
    expect(help.stdout).toMatch(/--keyvault-public-port/);
    const bad = await runCli(['serve', '--port', '0', '--keyvault-public-port', '70000'], { RSVAULT_DATA_DIR: path.join(f.tmp, 'bad') });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/invalid Key Vault public port '70000'/);
    const p = await startTestServer({ env, args: ['--keyvault-public-port', '443', '--keyvault-host-suffix', 'vault.proxy.test'] });
    try {
      await p.client.request('PUT', `/subscriptions/${p.creds.subscriptionId}/resourceGroups/rgp`, { query: { 'api-version': '2021-04-01' }, body: { location: 'local' } });
      const v = await p.client.request<{ properties: { vaultUri: string } }>('PUT', `/subscriptions/${p.creds.subscriptionId}/resourceGroups/rgp/providers/Microsoft.KeyVault/vaults/kvproxy${sfx}`, { query: { 'api-version': KV_API }, body: { location: 'local', properties: { tenantId: p.creds.tenantId, sku: { family: 'A', name: 'standard' }, accessPolicies: [] } } });
      expect(v.properties.vaultUri).toBe(`https://kvproxy${sfx}.vault.proxy.test/`);
      expect(p.output()).toMatch(/Key Vault hosts: +https:\/\/\{name\}\.vault\.proxy\.test\/\n/);
    } finally {
      await p.stop();
    }
  }, 60_000);
});
