/**
 * The official SDKs as clients of the ARM wire: Debian python3-azure (track-2 mgmt SDKs, run by /usr/bin/python3
 * from test/python/wire_sdk.py) and the @azure/arm-* JavaScript packages.
 * - Managed disk and storage account PUTs are answered as the API specs document (disks 202 + Azure-AsyncOperation +
 *   Location, storage accounts 200), so `begin_create_or_update` / `begin_create` succeed.
 * - Long-running operations tell the poller to come back in 1 s (Retry-After on the 201/202 and on every InProgress
 *   status body): an ADE extension PUT completes in seconds, not after the Python poller's default 30 s waits.
 * - The vault's backupResourceEncryptionConfig: GET (platform-managed by default), PUT of a customer-managed key with
 *   the documented rules, persisted across a restart.
 * - beginGetAccess on the disk of a deallocated VM (and not of a running one); a VM cannot start while it is exported.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes, randomUUID } from 'node:crypto';
import path from 'node:path';
import { ClientSecretCredential } from '@azure/identity';
import { ComputeManagementClient } from '@azure/arm-compute';
import { StorageManagementClient } from '@azure/arm-storage';
import { startTestServer, type TestServer } from './helpers/server.js';
import { Fixture, env, COMPUTE_API, RS_API, BK_API, MiB } from './recovery-fixture.js';

const PY = '/usr/bin/python3';
const SCRIPT = path.join(path.dirname(new URL(import.meta.url).pathname), 'python', 'wire_sdk.py');
const RG = 'rg-py';
let s: TestServer;
let f: Fixture;
let caFile: string;

interface LogEntry {
  method: string;
  path: string;
  status: number;
  retryAfter: string | null;
  opStatus?: string;
}

function py<T>(cmd: string, args: Record<string, unknown>): Promise<T & { log: LogEntry[] }> {
  return new Promise((resolve, reject) => {
    const p = spawn(PY, [SCRIPT, cmd, JSON.stringify({ origin: s.origin, clientId: s.creds.clientId, clientSecret: s.creds.clientSecret, subscriptionId: s.creds.subscriptionId, ...args })], {
      env: { ...process.env, REQUESTS_CA_BUNDLE: caFile, AZURE_CORE_COLLECT_TELEMETRY: 'false' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`python ${cmd} exited ${code}:\n${err}\n${out}`));
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()!) as T & { log: LogEntry[] });
      } catch (e) {
        reject(new Error(`python ${cmd}: no JSON on stdout (${(e as Error).message}):\n${out}\n${err}`));
      }
    });
  });
}

beforeAll(async () => {
  if (!existsSync(PY)) throw new Error('Debian python3 with python3-azure is required: run `sudo bash scripts/install-test-deps.sh`');
  s = await startTestServer({ env });
  f = new Fixture(s, RG);
  caFile = path.join(f.tmp, 'ca.pem');
  writeFileSync(caFile, s.ca);
  await f.group();
}, 120_000);

afterAll(async () => {
  await s?.stop();
  if (f) rmSync(f.tmp, { recursive: true, force: true });
});

describe('Python SDK (Debian python3-azure)', () => {
  it('disks.begin_create_or_update and storage_accounts.begin_create succeed (202 + LRO headers / 200)', async () => {
    const account = `sapy${randomBytes(3).toString('hex')}`;
    const r = await py<{ disk: { name: string; sizeGB: number; state: string; tags: Record<string, string> }; diskSeconds: number; account: { name: string; state: string }; accountSeconds: number }>('disk-and-storage', { rg: RG, disk: 'pydisk', account });
    expect(r.disk).toEqual({ name: 'pydisk', sizeGB: 1, state: 'Succeeded', tags: { k: 'v' } });
    expect(r.account).toEqual({ name: account, state: 'Succeeded' });
    const put = r.log.find((e) => e.method === 'PUT' && e.path.endsWith('/disks/pydisk'))!;
    expect(put).toMatchObject({ status: 202, retryAfter: '1' });
    // the poller followed Azure-AsyncOperation and then read the disk (final GET), without 30 s waits
    expect(r.log.some((e) => e.method === 'GET' && /operationStatuses/.test(e.path) && e.opStatus === 'Succeeded')).toBe(true);
    expect(r.log.some((e) => e.method === 'GET' && e.path.endsWith('/disks/pydisk') && e.status === 200)).toBe(true);
    expect(r.diskSeconds).toBeLessThan(10);
    expect(r.log.find((e) => e.method === 'PUT' && e.path.endsWith(`/storageAccounts/${account}`))!.status).toBe(200);
    expect(r.accountSeconds).toBeLessThan(10);
  }, 120_000);

  it('an LRO that runs for a while (ADE on a VM) is polled every second: Retry-After on the 201 and on InProgress status bodies', async () => {
    await f.keyVault('kvpy');
    await f.vm('vmpy', 96 * MiB);
    const settings = { EncryptionOperation: 'EnableEncryption', KeyVaultURL: `https://kvpy.vault.localhost:${s.port}/`, KeyVaultResourceId: f.kvId('kvpy'), VolumeType: 'All', KeyEncryptionKeyURL: `https://kvpy.vault.localhost:${s.port}/keys/kek`, KekVaultResourceId: f.kvId('kvpy'), KeyEncryptionAlgorithm: 'RSA-OAEP' };
    const r = await py<{ state: string; seconds: number }>('ade', { rg: RG, vm: 'vmpy', settings });
    expect(r.state).toBe('Succeeded');
    const put = r.log.find((e) => e.method === 'PUT')!;
    expect(put).toMatchObject({ status: 201, retryAfter: '1' });
    const polls = r.log.filter((e) => e.opStatus);
    expect(polls.at(-1)!.opStatus).toBe('Succeeded');
    for (const p of polls.filter((x) => x.opStatus === 'InProgress')) expect(p.retryAfter).toBe('1');
    // Without Retry-After the Python poller sleeps 30 s before each poll.
    expect(r.seconds).toBeLessThan(20);
    console.log(`ADE via the Python SDK: ${r.seconds.toFixed(1)} s, ${polls.length} status polls (${polls.filter((x) => x.opStatus === 'InProgress').length} InProgress)`);
  }, 180_000);

  it('backupResourceEncryptionConfig: platform-managed by default; customer-managed key PUT (200), its rules, persisted across a restart', async () => {
    await f.keyVault('kvcmk');
    const key = await f.kv<{ key: { kid: string } }>('kvcmk', 'GET', '/keys/kek');
    // a vault with a system-assigned identity and no protected items
    const v = await s.client.send('PUT', f.vaultPath('cmkvault'), { query: { 'api-version': RS_API }, body: { location: 'local', sku: { name: 'Standard' }, identity: { type: 'SystemAssigned' }, properties: {} } });
    expect(v.status).toBe(201);
    const r = await py<{ before: { name: string; type: string; properties: Record<string, unknown> }; after: { properties: Record<string, unknown> }; updateReturned: null; errors: Record<string, { status: number; code: string }> }>('encryption-config', { rg: RG, vault: 'cmkvault', keyUri: key.key.kid, missingKeyUri: `https://nosuchkv.vault.localhost:${s.port}/keys/k1` });
    expect(r.before).toMatchObject({ name: 'backupResourceEncryptionConfig', type: 'Microsoft.RecoveryServices/vaults/backupEncryptionConfigs', properties: { encryption_at_rest_type: 'MicrosoftManaged', infrastructure_encryption_state: 'Disabled', last_update_status: 'NotEnabled' } });
    expect(r.updateReturned).toBeNull();
    expect(r.after.properties).toMatchObject({ encryption_at_rest_type: 'CustomerManaged', key_uri: key.key.kid, infrastructure_encryption_state: 'Enabled', last_update_status: 'Succeeded', use_system_assigned_identity: true, subscription_id: s.creds.subscriptionId });
    expect(r.errors.missingVault).toMatchObject({ status: 400, code: 'UserErrorCmkKeyVaultNotFound' });
    expect(r.errors.revert).toMatchObject({ status: 400, code: 'UserErrorCmkCannotBeDisabled' });
    expect(r.errors.infra).toMatchObject({ status: 400, code: 'InvalidRequestContent' });
    // a vault with protected items, or without an identity, cannot take a customer-managed key
    await f.createVault('plainvault');
    const noId = await s.client.send('PUT', `${f.vaultPath('plainvault')}/backupEncryptionConfigs/backupResourceEncryptionConfig`, { query: { 'api-version': BK_API }, body: { properties: { encryptionAtRestType: 'CustomerManaged', keyUri: key.key.kid } } });
    expect(noId.status).toBe(400);
    expect((noId.body as { error: { code: string } }).error.code).toBe('UserErrorVaultIdentityNotEnabled');
    // persisted: the same after a restart
    const dataDir = s.dataDir;
    await s.stop({ keepData: true });
    s = await startTestServer({ env, dataDir });
    const again = await s.client.request<{ properties: Record<string, unknown> }>('GET', `${f.vaultPath('cmkvault')}/backupEncryptionConfigs/backupResourceEncryptionConfig`, { query: { 'api-version': BK_API } });
    expect(again.properties).toMatchObject({ encryptionAtRestType: 'CustomerManaged', keyUri: key.key.kid, infrastructureEncryptionState: 'Enabled' });
    f = new Fixture(s, RG);
  }, 180_000);
});

describe('JavaScript SDK (@azure/arm-compute, @azure/arm-storage)', () => {
  it('disks.beginCreateOrUpdateAndWait and storageAccounts.beginCreateAndWait', async () => {
    const tls = { tlsOptions: { ca: s.ca.toString() } };
    const credential = new ClientSecretCredential(s.creds.tenantId, s.creds.clientId, s.creds.clientSecret, { authorityHost: s.origin, disableInstanceDiscovery: true, ...tls } as ConstructorParameters<typeof ClientSecretCredential>[3]);
    const opts = { endpoint: s.origin, ...tls } as Record<string, unknown>;
    const compute = new ComputeManagementClient(credential, s.creds.subscriptionId, opts);
    const disk = await compute.disks.beginCreateOrUpdateAndWait(RG, 'jsdisk', { location: 'local', diskSizeGB: 1, creationData: { createOption: 'Empty' } }, { updateIntervalInMs: 100 });
    expect(disk).toMatchObject({ name: 'jsdisk', diskSizeGB: 1, provisioningState: 'Succeeded' });
    const storage = new StorageManagementClient(credential, s.creds.subscriptionId, opts);
    const name = `sajs${randomBytes(3).toString('hex')}`;
    const sa = await storage.storageAccounts.beginCreateAndWait(RG, name, { location: 'local', sku: { name: 'Standard_LRS' }, kind: 'StorageV2' }, { updateIntervalInMs: 100 });
    expect(sa).toMatchObject({ name, provisioningState: 'Succeeded' });
  }, 60_000);

  it('a principal whose Contributor role is on the resource group follows its own disk PUT and VM operations (status polling)', async () => {
    const sp = await s.client.request<{ id: string; appId: string; passwordCredentials: { secretText: string }[] }>('POST', '/v1.0/servicePrincipals', { body: { displayName: 'rg-contributor' } });
    const roles = await s.client.request<{ value: { id: string }[] }>('GET', `/subscriptions/${f.sub}/providers/Microsoft.Authorization/roleDefinitions`, { query: { 'api-version': '2022-04-01', $filter: "roleName eq 'Contributor'" } });
    await s.client.request('PUT', `${f.rgPath()}/providers/Microsoft.Authorization/roleAssignments/${randomUUID()}`, { query: { 'api-version': '2022-04-01' }, body: { properties: { roleDefinitionId: roles.value[0]!.id, principalId: sp.id } } });
    const tls = { tlsOptions: { ca: s.ca.toString() } };
    const credential = new ClientSecretCredential(s.creds.tenantId, sp.appId, sp.passwordCredentials[0]!.secretText, { authorityHost: s.origin, disableInstanceDiscovery: true, ...tls } as ConstructorParameters<typeof ClientSecretCredential>[3]);
    const compute = new ComputeManagementClient(credential, s.creds.subscriptionId, { endpoint: s.origin, ...tls } as Record<string, unknown>);
    const disk = await compute.disks.beginCreateOrUpdateAndWait(RG, 'rgdisk', { location: 'local', diskSizeGB: 1, creationData: { createOption: 'Empty' } }, { updateIntervalInMs: 100 });
    expect(disk).toMatchObject({ name: 'rgdisk', provisioningState: 'Succeeded' });
    // another principal with no role at all still cannot read the operation
    const other = await s.client.request<{ appId: string; passwordCredentials: { secretText: string }[] }>('POST', '/v1.0/servicePrincipals', { body: { displayName: 'no-role' } });
    const res = await s.client.send('PUT', `${f.rgPath()}/providers/Microsoft.Compute/disks/rgdisk2`, { query: { 'api-version': COMPUTE_API }, body: { location: 'local', properties: { diskSizeGB: 1, creationData: { createOption: 'Empty' } } } });
    const st = new URL(String(res.headers['azure-asyncoperation']));
    const denied = await s.clientFor(other.appId, other.passwordCredentials[0]!.secretText).send('GET', st.pathname + st.search);
    expect(denied.status).toBe(403);
  }, 60_000);
});

describe('beginGetAccess on the disk of a deallocated VM', () => {
  it('is refused while the VM runs, granted once it is deallocated; the VM cannot start while the SAS is active', async () => {
    await f.vm('vmsas', 1 * MiB);
    const disk = `${f.rgPath()}/providers/Microsoft.Compute/disks/vmsas-os`;
    const q = { 'api-version': COMPUTE_API };
    const running = await s.client.send('POST', `${disk}/beginGetAccess`, { query: q, body: { access: 'Read', durationInSeconds: 600 } });
    expect(running.status).toBe(409);
    expect((running.body as { error: { message: string } }).error.message).toMatch(/running; deallocate/);
    await s.client.waitForOperation(await s.client.send('POST', `${f.vmId('vmsas')}/powerOff`, { query: q }), { intervalMs: 100 });
    expect((await s.client.send('POST', `${disk}/beginGetAccess`, { query: q, body: { access: 'Read', durationInSeconds: 600 } })).status).toBe(409);
    await s.client.waitForOperation(await s.client.send('POST', `${f.vmId('vmsas')}/deallocate`, { query: q }), { intervalMs: 100 });
    const g = await s.client.send('POST', `${disk}/beginGetAccess`, { query: q, body: { access: 'Read', durationInSeconds: 600 } });
    expect(g.status, JSON.stringify(g.body)).toBe(200);
    expect((g.body as { accessSAS: string }).accessSAS).toMatch(/^https:\/\/.*\/diskaccess\//);
    await expect(s.client.waitForOperation(await s.client.send('POST', `${f.vmId('vmsas')}/start`, { query: q }), { intervalMs: 100 })).rejects.toMatchObject({ code: 'OperationNotAllowed' });
    await s.client.request('POST', `${disk}/endGetAccess`, { query: q });
    await s.client.waitForOperation(await s.client.send('POST', `${f.vmId('vmsas')}/start`, { query: q }), { intervalMs: 100 });
    const vm = await s.client.request<{ statuses: { code: string }[] }>('GET', `${f.vmId('vmsas')}/instanceView`, { query: q });
    expect(vm.statuses.map((x) => x.code)).toContain('PowerState/running');
  }, 60_000);
});

