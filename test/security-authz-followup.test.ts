/**
 * Authorization follow-ups to issue #12 (items 1–2), against the real server:
 * 1. A principal whose only role is on one resource group sees the subscription (GET /subscriptions, GET
 *    /subscriptions/{id}) — so `rsvault login` selects it without --subscription — and still reads nothing else.
 * 2. "The last Owner of the subscription cannot be removed" holds when two API processes share one database:
 *    concurrent deletes of the last two Owner assignments through two servers — exactly one succeeds.
 * 3. A VM is protected by one vault at a time (409 UserErrorVmAlreadyProtectedInAnotherVault); the protectable
 *    items of a vault list only the VMs the caller may read (and none another vault holds).
 * 4. A principal scoped to the vault only reads its jobs, items and recovery points, and through them reaches no
 *    data outside its scope: no key material, no SAS token, no readable restore output.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startTestServer, type TestServer } from './helpers/server.js';
import { Fixture, BK_API, MiB, env, type Job, type RecoveryPoint } from './recovery-fixture.js';
import { cli, get } from './restore-helpers.js';
import type { ApiResponse, RsvaultClient } from '../src/client/index.js';

let s: TestServer;
let f1: Fixture; // rg1: the vaults and a VM
let f2: Fixture; // rg2: a VM the limited principals cannot see
let tmp: string;
const RG1 = 'rg-fu1';
const RG2 = 'rg-fu2';
const VM1 = 'vm-fu1'; // in rg1
const VM2 = 'vm-fu2'; // in rg2
const RSV_A = 'rsv-fu-a';
const RSV_B = 'rsv-fu-b';
const bk = { 'api-version': BK_API };
const RA_API = { 'api-version': '2022-04-01' };
const SUB_API = { 'api-version': '2022-12-01' };
const sfx = randomBytes(3).toString('hex');

interface Sp {
  id: string;
  appId: string;
  secret: string;
  c: RsvaultClient;
}
const sps: Sp[] = [];
const sub = () => s.creds.subscriptionId;
const subScope = () => `/subscriptions/${sub()}`;
const raPath = (scope: string, name: string) => `${scope}/providers/Microsoft.Authorization/roleAssignments/${name}`;
const errOf = (res: ApiResponse<unknown>) => (res.body as { error: { code: string; message: string } }).error;

async function newSp(name: string, server: TestServer = s): Promise<Sp> {
  const sp = await s.client.request<{ id: string; appId: string; passwordCredentials: { secretText: string }[] }>('POST', '/v1.0/servicePrincipals', { body: { displayName: name } });
  const out = { id: sp.id, appId: sp.appId, secret: sp.passwordCredentials[0]!.secretText, c: server.clientFor(sp.appId, sp.passwordCredentials[0]!.secretText) };
  sps.push(out);
  return out;
}
async function assign(c: RsvaultClient, principalId: string, role: string, scope: string, name = randomUUID()): Promise<string> {
  const r = await c.send('PUT', raPath(scope, name), { query: RA_API, body: { properties: { roleDefinitionId: role, principalId } } });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return name;
}
async function subOwners(c: RsvaultClient = s.client): Promise<string[]> {
  const all = await c.list<{ name: string; properties: { scope: string; roleDefinitionId: string } }>(`${subScope()}/providers/Microsoft.Authorization/roleAssignments`, { query: RA_API });
  return all.filter((a) => a.properties.scope.toLowerCase() === subScope().toLowerCase() && a.properties.roleDefinitionId.endsWith('8e3af657-a8ff-443c-a75c-2fe8c4bcb635')).map((a) => a.name);
}

beforeAll(async () => {
  s = await startTestServer({ env });
  tmp = mkdtempSync(path.join(os.tmpdir(), 'rsv-secfu-'));
  f1 = new Fixture(s, RG1);
  f2 = new Fixture(s, RG2);
  await f1.group();
  await f2.group();
  await Promise.all([f1.vm(VM1, 2 * MiB), f2.vm(VM2, 2 * MiB)]);
  expect((await f1.createVault(RSV_A)).status).toBe(201);
  expect((await f1.createVault(RSV_B)).status).toBe(201);
}, 120_000);

afterAll(async () => {
  for (const sp of sps) sp.c.close();
  await s?.stop();
  for (const f of [f1, f2]) if (f) rmSync(f.tmp, { recursive: true, force: true });
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('item 1: the subscription is visible to a principal with a role below it', () => {
  it('Reader on one resource group: rsvault login selects the subscription (no --subscription), and it still cannot read the other group', async () => {
    const r = await newSp('fu-reader-rg1');
    await assign(s.client, r.id, 'Reader', f1.rgPath());
    // The API: listed, and GET /subscriptions/{id} and its locations answer.
    const list = await r.c.request<{ value: { subscriptionId: string }[] }>('GET', '/subscriptions', { query: SUB_API });
    expect(list.value.map((x) => x.subscriptionId)).toEqual([sub()]);
    expect((await r.c.request<{ subscriptionId: string }>('GET', subScope(), { query: SUB_API })).subscriptionId).toBe(sub());
    expect((await r.c.send('GET', `${subScope()}/locations`, { query: SUB_API })).status).toBe(200);

    // The CLI: login lists it as the default, and commands run without --subscription.
    const cfg = { RSVAULT_CONFIG_DIR: path.join(tmp, 'cfg-reader') };
    const login = await cli(cfg, 'login', '--server', s.origin, '--service-principal', '-u', r.appId, '-p', r.secret, '--tenant', s.creds.tenantId, '--ca-file', s.creds.caPath);
    expect(login.code, login.stderr).toBe(0);
    expect(login.json).toEqual([expect.objectContaining({ id: sub(), isDefault: true })]);
    const shown = await cli(cfg, 'account', 'show');
    expect((shown.json as { id: string }).id).toBe(sub());
    const own = await cli(cfg, 'group', 'show', '-n', RG1);
    expect(own.code, own.stderr).toBe(0);
    expect((own.json as { name: string }).name).toBe(RG1);
    // …and nothing beyond its group: the other group, the subscription's groups list, the subscription's resources.
    const other = await cli(cfg, 'group', 'show', '-n', RG2);
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(/^ERROR: \(AuthorizationFailed\) .*over scope '\/subscriptions\/[^']+\/resourceGroups\/rg-fu2'/im);
    expect((await r.c.send('GET', `${subScope()}/resourcegroups`, { query: { 'api-version': '2021-04-01' } })).status).toBe(403);
    expect((await r.c.send('GET', `${subScope()}/resources`, { query: { 'api-version': '2021-04-01' } })).status).toBe(403);
  }, 60_000);

  it('a role on a single VM is enough to see the subscription; no role at all is not', async () => {
    const vmOnly = await newSp('fu-reader-vm');
    await assign(s.client, vmOnly.id, 'Reader', f2.vmId(VM2));
    expect((await vmOnly.c.request<{ value: unknown[] }>('GET', '/subscriptions', { query: SUB_API })).value).toHaveLength(1);
    const none = await newSp('fu-nobody');
    expect((await none.c.request<{ value: unknown[] }>('GET', '/subscriptions', { query: SUB_API })).value).toEqual([]);
    const got = await none.c.send('GET', subScope(), { query: SUB_API });
    expect(got.status).toBe(403);
    expect(errOf(got).code).toBe('AuthorizationFailed');
    expect((await none.c.send('GET', `${subScope()}/locations`, { query: SUB_API })).status).toBe(403);
  });
});

describe('item 2: the last Owner stays when two API processes share the database', () => {
  it('concurrent deletes of the last two Owner assignments through two servers: exactly one succeeds, every round', async () => {
    const s2 = await startTestServer({ dataDir: s.dataDir, env });
    try {
      const ROUNDS = 8;
      const owners: Sp[] = [];
      for (let i = 0; i <= ROUNDS; i++) owners.push(await newSp(`fu-owner-${i}`, i % 2 ? s2 : s));
      // Start: the bootstrap admin is the only subscription Owner; owner[0] joins it, then the admin goes.
      const admins = await subOwners();
      expect(admins).toHaveLength(1);
      let survivor = owners[0]!;
      let survivorRa = await assign(s.client, survivor.id, 'Owner', subScope());
      expect((await s.client.send('DELETE', raPath(subScope(), admins[0]!), { query: RA_API })).status).toBe(200);
      for (let i = 1; i <= ROUNDS; i++) {
        const joiner = owners[i]!;
        const joinerRa = await assign(survivor.c, joiner.id, 'Owner', subScope());
        expect(await subOwners(survivor.c)).toHaveLength(2);
        // Each deletes its own assignment, one through each server, at the same time.
        const [a, b] = await Promise.all([
          survivor.c.send('DELETE', raPath(subScope(), survivorRa), { query: RA_API }),
          joiner.c.send('DELETE', raPath(subScope(), joinerRa), { query: RA_API }),
        ]);
        const statuses = [a.status, b.status].sort();
        expect(statuses, `round ${i}: ${JSON.stringify([a.body, b.body])}`).toEqual([200, 409]);
        const refused = a.status === 409 ? a : b;
        expect(errOf(refused).code).toBe('LastOwnerCannotBeRemoved');
        const left = await subOwners(a.status === 409 ? survivor.c : joiner.c);
        expect(left).toHaveLength(1);
        [survivor, survivorRa] = a.status === 409 ? [survivor, survivorRa] : [joiner, joinerRa];
        expect(left).toEqual([survivorRa]);
      }
      // Deleting the last Owner's principal is refused as well, and leaves it whole.
      const spDel = await survivor.c.send('DELETE', `/v1.0/servicePrincipals/${survivor.id}`);
      expect(spDel.status).toBe(409);
      expect(errOf(spDel).code).toBe('LastOwnerCannotBeRemoved');
      expect(await subOwners(survivor.c)).toEqual([survivorRa]);
      // Give the admin its Owner back (the other tests use it).
      await assign(survivor.c, s.creds.objectId, 'Owner', subScope());
    } finally {
      await s2.stop({ keepData: true });
    }
  }, 120_000);
});

describe('item 3: one vault per VM; protectable items only of VMs the caller may read', () => {
  it('a VM protected in vault A cannot be protected in vault B (409 UserErrorVmAlreadyProtectedInAnotherVault), by PUT and by pre-validation', async () => {
    expect((await f1.opStatus(await f1.enable(RSV_A, VM1))).status).toBe('Succeeded');
    const res = await f1.enable(RSV_B, VM1);
    expect(res.status, JSON.stringify(res.body)).toBe(409);
    expect(errOf(res).code).toBe('UserErrorVmAlreadyProtectedInAnotherVault');
    expect(errOf(res).message).toContain(f1.vaultPath(RSV_A));
    expect((await s.client.send('GET', f1.itemPath(RSV_B, VM1), { query: bk })).status).toBe(404);
    const pre = await s.client.request<{ status: string; errorCode?: string }>('POST', `${subScope()}/providers/Microsoft.RecoveryServices/locations/local/backupPreValidateProtection`, {
      query: bk,
      body: { resourceType: 'VM', resourceId: f1.vmId(VM1), vaultId: f1.vaultPath(RSV_B) },
    });
    expect(pre).toMatchObject({ status: 'Failed', errorCode: 'UserErrorVmAlreadyProtectedInAnotherVault' });
    // Stopping protection but keeping the data still holds the VM in vault A.
    const stop = await f1.opStatus(await f1.enable(RSV_A, VM1, 'DefaultPolicy', { protectionState: 'ProtectionStopped' }));
    expect(stop.status).toBe('Succeeded');
    expect((await f1.enable(RSV_B, VM1)).status).toBe(409);
    // Protecting it again in vault A (resume) is fine.
    expect((await f1.opStatus(await f1.enable(RSV_A, VM1))).status).toBe('Succeeded');
    // Vault B's protectable items do not offer it; vault A's list it as protected.
    const inB = await s.client.list<{ properties: { friendlyName: string; protectionState: string } }>(`${f1.vaultPath(RSV_B)}/backupProtectableItems`, { query: bk });
    expect(inB.map((x) => x.properties.friendlyName)).toEqual([VM2]);
    const inA = await s.client.list<{ properties: { friendlyName: string; protectionState: string } }>(`${f1.vaultPath(RSV_A)}/backupProtectableItems`, { query: bk });
    expect(inA.map((x) => [x.properties.friendlyName, x.properties.protectionState])).toEqual([
      [VM1, 'Protected'],
      [VM2, 'NotProtected'],
    ]);
  }, 60_000);

  it("the vault's readers see only the VMs they may read among protectable items", async () => {
    const rgReader = await newSp('fu-backupreader-rg1');
    await assign(s.client, rgReader.id, 'Backup Reader', f1.rgPath());
    const names = async (c: RsvaultClient) => (await c.list<{ properties: { friendlyName: string; virtualMachineId: string } }>(`${f1.vaultPath(RSV_B)}/backupProtectableItems`, { query: bk })).map((x) => x.properties.virtualMachineId);
    // Backup Reader on rg1 reads VMs in rg1 only: rg2's VM is not shown to it.
    expect(await names(rgReader.c)).toEqual([]); // VM1 is held by vault A; VM2 is in rg2
    const vaultOnly = await newSp('fu-backupreader-vault');
    await assign(s.client, vaultOnly.id, 'Backup Reader', f1.vaultPath(RSV_B));
    expect(await names(vaultOnly.c)).toEqual([]);
    // With read on rg2's VM, it appears.
    await assign(s.client, vaultOnly.id, 'Reader', f2.vmId(VM2));
    expect(await names(vaultOnly.c)).toEqual([f2.vmId(VM2)]);
    expect(await names(s.client)).toEqual([f2.vmId(VM2)]);
  });
});

describe('item 4: a vault-scoped principal reaches nothing outside the vault through jobs, items and recovery points', () => {
  it('Backup Reader on the vault: reads the restore job, item and recovery point, but gets no key material, no SAS and cannot read the restored blobs', async () => {
    // The admin backs VM1 up in vault A and restores its disks into a storage account of rg1.
    const job = await f1.waitJob(RSV_A, (await f1.opStatus(await f1.backup(RSV_A, VM1))).properties!.jobId);
    expect(job.properties.status, JSON.stringify(job.properties.errorDetails)).toBe('Completed');
    const rpId = job.properties.extendedInfo.propertyBag['Recovery Point Id']!;
    const sa = `stfu${sfx}`;
    await s.client.request('PUT', `${f1.rgPath()}/providers/Microsoft.Storage/storageAccounts/${sa}`, { query: { 'api-version': '2023-01-01' }, body: { location: 'local', sku: { name: 'Standard_LRS' }, kind: 'StorageV2' } });
    const r = await s.client.send('POST', `${f1.itemPath(RSV_A, VM1)}/recoveryPoints/${rpId}/restore`, {
      query: bk,
      body: { properties: { objectType: 'IaasVMRestoreRequest', recoveryType: 'RestoreDisks', recoveryPointId: rpId, storageAccountId: `${f1.rgPath()}/providers/Microsoft.Storage/storageAccounts/${sa}` } },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const rj = await f1.waitJob(RSV_A, (await f1.opStatus(r)).properties!.jobId);
    expect(rj.properties.status, JSON.stringify(rj.properties.errorDetails)).toBe('Completed');

    const reader = await newSp('fu-backupreader-vault-a');
    await assign(s.client, reader.id, 'Backup Reader', f1.vaultPath(RSV_A));
    const seen = await reader.c.request<Job>('GET', `${f1.vaultPath(RSV_A)}/backupJobs/${rj.name}`, { query: bk });
    const bag = seen.properties.extendedInfo.propertyBag;
    const uris = Object.entries(bag).filter(([k]) => /Uri$/.test(k)).map(([, v]) => v);
    expect(uris.length).toBeGreaterThanOrEqual(3); // the OS disk, the VM config and the template
    const all = JSON.stringify([seen, await reader.c.list(`${f1.vaultPath(RSV_A)}/backupJobs`, { query: bk }), await reader.c.request('GET', f1.itemPath(RSV_A, VM1), { query: bk })]);
    expect(all).not.toMatch(/[?&](sig|sv|se)=/); // no SAS token anywhere
    expect(all).not.toMatch(/keyBackupData|secretData|BEK|accessSAS/i);
    const rp = await reader.c.request<RecoveryPoint>('GET', `${f1.itemPath(RSV_A, VM1)}/recoveryPoints/${rpId}`, { query: bk });
    expect(rp.properties.keyAndSecret).toBeUndefined();
    // The URIs are only names: the reader cannot read them; the admin (who may) can.
    for (const u of uris) {
      expect((await get(s, u, await reader.c.token('https://storage.azure.com'))).status, u).toBe(403);
      expect((await get(s, u, await s.client.token('https://storage.azure.com'))).status, u).toBe(200);
    }
    // Nor can it start a restore or read the keys.
    expect((await reader.c.send('POST', `${f1.itemPath(RSV_A, VM1)}/recoveryPoints/${rpId}/restore`, { query: bk, body: { properties: { objectType: 'IaasVMRestoreRequest', recoveryType: 'RestoreDisks', storageAccountId: `${f1.rgPath()}/providers/Microsoft.Storage/storageAccounts/${sa}` } } })).status).toBe(403);
  }, 120_000);
});
