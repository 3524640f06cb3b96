/**
 * Integrity of recovery points against the real server (issue #12 items 5 and 6):
 * - two VMs' manifests swapped on disk: restore fails with UserErrorRecoveryPointTampered instead of restoring the
 *   other VM's data, and verify reports it;
 * - a flipped byte in a stored chunk: the Verify job (CLI `backup vault verify`) fails naming the recovery point, the
 *   disk and the byte range, quarantines the chunk; the next backup of the unchanged VM stores it again, verify
 *   passes, and a restore of the new recovery point is byte-identical;
 * - recatalog: recovery point rows deleted from the database come back from the vault directory's index files and
 *   restore.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openServerDb, startTestServer, type TestServer } from './helpers/server.js';
import { sql } from '../src/platform/db/index.js';
import { Fixture, BK_API, MiB, env, type RecoveryPoint } from './recovery-fixture.js';
import { cli, post } from './restore-helpers.js';
import { decodeManifest, encodeManifest } from '../src/engine/index.js';

let s: TestServer;
let f: Fixture;
let dataDir: string;
let cliEnv: Record<string, string>;
const RG = 'rg-integ';
const bk = { 'api-version': BK_API };

async function guestDisk(vm: string): Promise<Buffer> {
  const r = await post(s, `${s.origin}${f.vmId(vm)}/guestIo/read?api-version=2022-08-01&osDisk=true&offset=0`, Buffer.alloc(0), await s.client.token());
  expect(r.status).toBe(200);
  return r.body;
}
async function backupNow(vault: string, vm: string): Promise<{ rpId: string; bag: Record<string, string> }> {
  const job = await f.waitJob(vault, (await f.opStatus(await f.backup(vault, vm))).properties!.jobId);
  expect(job.properties.status, JSON.stringify(job.properties.errorDetails)).toBe('Completed');
  return { rpId: job.properties.extendedInfo.propertyBag['Recovery Point Id']!, bag: job.properties.extendedInfo.propertyBag };
}
async function restoreOriginal(vault: string, vm: string, rpId: string) {
  const res = await s.client.send('POST', `${f.itemPath(vault, vm)}/recoveryPoints/${rpId}/restore`, { query: bk, body: { properties: { objectType: 'IaasVMRestoreRequest', recoveryType: 'OriginalLocation', recoveryPointId: rpId } } });
  expect(res.status, JSON.stringify(res.body)).toBe(202);
  return f.waitJob(vault, (await f.opStatus(res)).properties!.jobId);
}
/** The vault directory (`vaults/{uid}`) holding a recovery point. */
function vaultDirOf(rpId: string): string {
  const root = path.join(dataDir, 'vaults');
  const uid = readdirSync(root).find((u) => existsSync(path.join(root, u, 'manifests', rpId)));
  if (!uid) throw new Error(`no vault directory holds ${rpId}`);
  return path.join(root, uid);
}
const points = (vault: string, vm: string) => s.client.list<RecoveryPoint>(`${f.itemPath(vault, vm)}/recoveryPoints`, { query: bk });

beforeAll(async () => {
  dataDir = mkdtempSync(path.join(os.tmpdir(), 'rsv-integ-'));
  s = await startTestServer({ env, dataDir });
  f = new Fixture(s, RG);
  await f.group();
  cliEnv = { RSVAULT_CONFIG_DIR: path.join(f.tmp, 'cfg') };
  const login = await cli(cliEnv, 'login', '--server', s.origin, '--service-principal', '-u', s.creds.clientId, '-p', s.creds.clientSecret, '--tenant', s.creds.tenantId, '--ca-file', s.creds.caPath);
  expect(login.code, login.stderr).toBe(0);
}, 120_000);

afterAll(async () => {
  await s?.stop();
  if (f) rmSync(f.tmp, { recursive: true, force: true });
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('swapped manifests (5b)', () => {
  const RSV = 'rsvswap';
  let rpA: string;
  let rpB: string;
  let diskB: Buffer;

  beforeAll(async () => {
    await f.createVault(RSV);
    for (const vm of ['vma', 'vmb']) {
      await f.vm(vm, 4 * MiB);
      await f.opStatus(await f.enable(RSV, vm));
    }
    rpA = (await backupNow(RSV, 'vma')).rpId;
    rpB = (await backupNow(RSV, 'vmb')).rpId;
    expect(rpA).not.toBe(rpB);
    // Make B's disk differ from its backup, so a wrong restore would be visible and a refused one leaves it so.
    await f.guestWrite('vmb', 0, Buffer.from('B-WRITTEN-AFTER-BACKUP'));
    diskB = await guestDisk('vmb');
    // VM A's manifest copied over VM B's (and B's over A's).
    const dir = vaultDirOf(rpA);
    const a = path.join(dir, 'manifests', rpA, 'os.manifest');
    const b = path.join(dir, 'manifests', rpB, 'os.manifest');
    renameSync(a, `${a}.x`);
    renameSync(b, a);
    renameSync(`${a}.x`, b);
  }, 120_000);

  it('restore of VM B fails with UserErrorRecoveryPointTampered and writes nothing (not VM A\'s data)', async () => {
    const job = await restoreOriginal(RSV, 'vmb', rpB);
    expect(job.properties.status).toBe('Failed');
    expect(job.properties.errorDetails[0]).toMatchObject({ errorTitle: 'UserErrorRecoveryPointTampered', errorCode: 400324 });
    expect(job.properties.errorDetails[0]!.errorString).toMatch(new RegExp(`${rpB}.*vmb-os`));
    expect((await guestDisk('vmb')).equals(diskB)).toBe(true);
  });

  it('a manifest moved to another recovery point of the same disk (a roll-back) is refused too', async () => {
    const rpB2 = (await backupNow(RSV, 'vmb')).rpId;
    const dir = vaultDirOf(rpB2);
    // Put B's first manifest (now sitting in rpA's directory after the swap) into the newer point.
    writeFileSync(path.join(dir, 'manifests', rpB2, 'os.manifest'), readFileSync(path.join(dir, 'manifests', rpA, 'os.manifest')));
    const job = await restoreOriginal(RSV, 'vmb', rpB2);
    expect(job.properties.status).toBe('Failed');
    expect(job.properties.errorDetails[0]!.errorTitle).toBe('UserErrorRecoveryPointTampered');
  });

  it('verify reports the tampered recovery points', async () => {
    const r = await cli(cliEnv, 'backup', 'vault', 'verify', '-g', RG, '-n', RSV);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/UserErrorRecoveryPointTampered/);
    const jobs = await s.client.list<{ name: string; properties: { operation: string; status: string; errorDetails: { errorTitle: string; errorString: string }[] } }>(`${f.vaultPath(RSV)}/backupJobs`, { query: bk });
    const v = jobs.find((j) => j.properties.operation === 'Verify')!;
    expect(v.properties.status).toBe('Failed');
    expect(v.properties.errorDetails[0]!.errorString).toContain(rpA);
    expect(v.properties.errorDetails[0]!.errorString).toContain(rpB);
  });
});

describe('verify, quarantine and repair (6); recatalog (5c)', () => {
  const RSV = 'rsvverify';
  const VM = 'vmv';
  let rp1: string;
  let atBackup: Buffer;
  let chunkId: string;
  let storeDir: string;

  beforeAll(async () => {
    await f.createVault(RSV);
    await f.vm(VM, 4 * MiB);
    await f.opStatus(await f.enable(RSV, VM));
    rp1 = (await backupNow(RSV, VM)).rpId;
    atBackup = await guestDisk(VM);
    const dir = vaultDirOf(rp1);
    storeDir = path.join(dir, 'store');
    const m = decodeManifest(readFileSync(path.join(dir, 'manifests', rp1, 'os.manifest')), undefined, { unauthenticated: true });
    expect(m.version).toBe(2);
    // The third chunk: its byte range in the image is [2 × chunk size, 3 × chunk size).
    chunkId = m.idHex(2);
    const file = path.join(storeDir, 'chunks', chunkId.slice(0, 4), chunkId);
    const bytes = readFileSync(file);
    bytes[100]! ^= 0x5a;
    writeFileSync(file, bytes);
  }, 120_000);

  it('verify (CLI, waits with progress) fails naming the recovery point, disk and byte range; the chunk is quarantined; the job is listed', async () => {
    const r = await cli(cliEnv, 'backup', 'vault', 'verify', '-g', RG, '-n', RSV);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/UserErrorVerifyFoundDamagedData/);
    const list = await cli(cliEnv, 'backup', 'job', 'list', '--vault-name', RSV, '-g', RG);
    expect(list.code, list.stderr).toBe(0);
    const verify = (list.json as { name: string; properties: { operation: string; status: string; errorDetails: { errorTitle: string; errorString: string; errorCode: number }[]; extendedInfo?: { propertyBag: Record<string, string> } } }[]).find((j) => j.properties.operation === 'Verify')!;
    expect(verify.properties.status).toBe('Failed');
    const job = await f.job(RSV, verify.name);
    const e = job.properties.errorDetails[0]!;
    expect(e).toMatchObject({ errorTitle: 'UserErrorVerifyFoundDamagedData', errorCode: 400325 });
    const cs = 64 * 1024; // chunk size of a 4 MiB disk
    expect(e.errorString).toContain(`recovery point ${rp1} (VM ${VM}), disk '${VM}-os' (os): bytes ${2 * cs}-${3 * cs - 1} (chunk corrupted, chunk 2)`);
    expect(job.properties.extendedInfo.propertyBag).toMatchObject({ 'Damaged Chunks': '1', 'Quarantined Chunks': '1', 'Recovery Points Checked': '1' });
    expect(readdirSync(path.join(storeDir, 'quarantine')).some((n) => n.startsWith(chunkId))).toBe(true);
    expect(existsSync(path.join(storeDir, 'chunks', chunkId.slice(0, 4), chunkId))).toBe(false);
  }, 60_000);

  it('the next backup of the unchanged VM stores the chunk again; verify then completes; a restore of the new point is byte-identical', async () => {
    const { rpId: rp2 } = await backupNow(RSV, VM);
    expect(existsSync(path.join(storeDir, 'chunks', chunkId.slice(0, 4), chunkId))).toBe(true);
    const r = await cli(cliEnv, 'backup', 'vault', 'verify', '-g', RG, '-n', RSV, '--no-wait');
    expect(r.code, r.stderr).toBe(0);
    const id = (r.json as { name: string }).name;
    const job = await f.waitJob(RSV, id);
    expect(job.properties.status, JSON.stringify(job.properties.errorDetails)).toBe('Completed');
    expect(job.properties.operation).toBe('Verify');
    expect(job.properties.extendedInfo.propertyBag).toMatchObject({ 'Recovery Points Checked': '2', 'Damaged Chunks': '0' });
    await f.guestWrite(VM, 3 * 64 * 1024 - 10, Buffer.from('garbage written over the repaired range'));
    const rest = await restoreOriginal(RSV, VM, rp2);
    expect(rest.properties.status, JSON.stringify(rest.properties.errorDetails)).toBe('Completed');
    expect((await guestDisk(VM)).equals(atBackup)).toBe(true);
  }, 90_000);

  it('recatalog brings back recovery point rows deleted from the database, and they restore', async () => {
    const before = (await points(RSV, VM)).map((p) => p.name).sort();
    expect(before).toHaveLength(2);
    const { db, close } = openServerDb(s);
    try {
      const n = await sql`DELETE FROM recovery_points WHERE item_norm LIKE ${`%/vaults/${RSV}|%`}`.execute(db);
      expect(Number(n.numAffectedRows)).toBe(2);
    } finally {
      await close();
    }
    expect(await points(RSV, VM)).toHaveLength(0);
    const r = await cli(cliEnv, 'backup', 'vault', 'recatalog', '-g', RG, '-n', RSV);
    expect(r.code, r.stderr).toBe(0);
    const rep = r.json as { recovered: { recoveryPointId: string }[]; skipped: unknown[] };
    expect(rep.recovered.map((x) => x.recoveryPointId).sort()).toEqual(before);
    expect((await points(RSV, VM)).map((p) => p.name).sort()).toEqual(before);
    // A second run finds nothing more to do.
    const again = await cli(cliEnv, 'backup', 'vault', 'recatalog', '-g', RG, '-n', RSV);
    expect((again.json as { recovered: unknown[] }).recovered).toHaveLength(0);
    await f.guestWrite(VM, 0, Buffer.from('after recatalog'));
    const rest = await restoreOriginal(RSV, VM, before[0]!);
    expect(rest.properties.status, JSON.stringify(rest.properties.errorDetails)).toBe('Completed');
    expect((await guestDisk(VM)).equals(atBackup)).toBe(true);
  }, 90_000);

  it('bad input: unknown vault → 404; no api-version → 400', async () => {
    const r = await s.client.send('POST', `${f.vaultPath('nosuchvault')}/verify`, { query: bk });
    expect(r.status).toBe(404);
    const r2 = await s.client.send('POST', `${f.vaultPath(RSV)}/recatalog`, {});
    expect(r2.status).toBe(400);
  });
});

describe('recovery points from before authentication (version-1 manifests)', () => {
  const RSV = 'rsvold';
  const VM = 'vmold';
  it('stay restorable; verify completes with warnings naming them as unauthenticated', async () => {
    await f.createVault(RSV);
    await f.vm(VM, 2 * MiB);
    await f.opStatus(await f.enable(RSV, VM));
    const { rpId } = await backupNow(RSV, VM);
    const atBackup = await guestDisk(VM);
    // Turn it into what an older rsvault wrote: a version-1 manifest and a row without the manifest MAC.
    const file = path.join(vaultDirOf(rpId), 'manifests', rpId, 'os.manifest');
    writeFileSync(file, encodeManifest(decodeManifest(readFileSync(file), undefined, { unauthenticated: true })));
    const { db, close } = openServerDb(s);
    try {
      const row = (await sql<{ disks_json: string }>`SELECT disks_json FROM recovery_points WHERE id = ${rpId}`.execute(db)).rows[0]!;
      const disks = (JSON.parse(row.disks_json) as { mac?: string }[]).map(({ mac: _mac, ...d }) => d);
      await sql`UPDATE recovery_points SET disks_json = ${JSON.stringify(disks)} WHERE id = ${rpId}`.execute(db);
    } finally {
      await close();
    }
    const r = await cli(cliEnv, 'backup', 'vault', 'verify', '-g', RG, '-n', RSV);
    expect(r.code, r.stderr).toBe(0);
    const job = r.json as { properties: { status: string; errorDetails: { errorTitle: string; errorString: string }[] } };
    expect(job.properties.status).toBe('CompletedWithWarnings');
    expect(job.properties.errorDetails[0]!.errorTitle).toBe('UserErrorVerifyFoundUnauthenticatedManifests');
    expect(job.properties.errorDetails[0]!.errorString).toContain(rpId);
    await f.guestWrite(VM, 0, Buffer.from('changed'));
    const rest = await restoreOriginal(RSV, VM, rpId);
    expect(rest.properties.status, JSON.stringify(rest.properties.errorDetails)).toBe('Completed');
    expect((await guestDisk(VM)).equals(atBackup)).toBe(true);
  }, 60_000);
});

describe('authorization of verify and recatalog', () => {
  async function principalWith(role: string) {
    const sp = await s.client.request<{ id: string; appId: string; passwordCredentials: { secretText: string }[] }>('POST', '/v1.0/servicePrincipals', { body: { displayName: `integ-${role.replace(/ /g, '-').toLowerCase()}` } });
    const roles = await s.client.request<{ value: { id: string }[] }>('GET', `/subscriptions/${f.sub}/providers/Microsoft.Authorization/roleDefinitions`, { query: { 'api-version': '2022-04-01', $filter: `roleName eq '${role}'` } });
    await s.client.request('PUT', `${f.rgPath()}/providers/Microsoft.Authorization/roleAssignments/${crypto.randomUUID()}`, { query: { 'api-version': '2022-04-01' }, body: { properties: { roleDefinitionId: roles.value[0]!.id, principalId: sp.id } } });
    return s.clientFor(sp.appId, sp.passwordCredentials[0]!.secretText);
  }
  it('Backup Reader: 403 on both; Backup Operator: may verify (202), not recatalog (403)', async () => {
    const reader = await principalWith('Backup Reader');
    const operator = await principalWith('Backup Operator');
    try {
      for (const action of ['verify', 'recatalog']) {
        const r = await reader.send('POST', `${f.vaultPath('rsvverify')}/${action}`, { query: bk });
        expect(r.status, action).toBe(403);
        expect((r.body as { error: { code: string } }).error.code).toBe('AuthorizationFailed');
      }
      const v = await operator.send('POST', `${f.vaultPath('rsvverify')}/verify`, { query: bk });
      expect(v.status).toBe(202);
      await f.waitJob('rsvverify', (await f.opStatus(v)).properties!.jobId);
      expect((await operator.send('POST', `${f.vaultPath('rsvverify')}/recatalog`, { query: bk })).status).toBe(403);
    } finally {
      reader.close();
      operator.close();
    }
  }, 60_000);
});

describe('scheduled verify (6)', () => {
  it('with --verify-schedule every vault gets a Verify job that is not user-triggered; a bad schedule stops start-up', async () => {
    await s.stop();
    s = await startTestServer({ dataDir, env: { ...env, RSVAULT_SCHEDULER_TICK_MS: '500' }, args: ['--verify-schedule', '*/2 * * * * *'] });
    f = new Fixture(s, RG);
    type J = { name: string; properties: { operation: string; status: string; isUserTriggered: boolean; entityFriendlyName: string } };
    let scheduled: J | undefined;
    for (let i = 0; i < 100 && !scheduled; i++) {
      const jobs = await s.client.list<J>(`${f.vaultPath('rsvverify')}/backupJobs`, { query: bk });
      scheduled = jobs.find((j) => j.properties.operation === 'Verify' && !j.properties.isUserTriggered && j.properties.status !== 'InProgress');
      if (!scheduled) await new Promise((r) => setTimeout(r, 200));
    }
    expect(scheduled, 'a scheduled Verify job').toBeDefined();
    expect(scheduled!.properties).toMatchObject({ status: 'Completed', entityFriendlyName: 'rsvverify' });
    const bad = await cli(cliEnv, 'serve', '--data-dir', path.join(f.tmp, 'never'), '--verify-schedule', 'every tuesday');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/invalid verify schedule/);
  }, 60_000);
});
