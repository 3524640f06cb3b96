/**
 * The Debian azure-cli 2.45 (unmodified; ADFS-style custom cloud) against rsvault: group create, backup vault
 * create, policy list, enable-for-vm (with the opt-in compute api-version shim for a Debian packaging bug),
 * backup-now, job list/show, item list. Needs the Debian `azure-cli` package (scripts/install-test-deps.sh): without it
 * the suite fails with that instruction rather than skipping, so a missing client can never pass as green.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { startTestServer, type TestServer } from './helpers/server.js';
import { azSession, type AzSession } from './helpers/az.js';
import { Fixture, env } from './recovery-fixture.js';

let s: TestServer;
let f: Fixture;
const RG = 'rg-az';
const KV = `kvaz-${randomBytes(3).toString('hex')}`;

let azs: AzSession;
const az: AzSession['az'] = (args, o) => azs.az(args, o);

beforeAll(async () => {
  s = await startTestServer({ env });
  f = new Fixture(s, RG);
  azs = await azSession(s, { prefix: 'rsv-az-' });
}, 120_000);

afterAll(async () => {
  await s?.stop();
  azs?.close();
  if (f) rmSync(f.tmp, { recursive: true, force: true });
});

describe('az 2.45 (Debian) drives rsvault', () => {
  it('group create, backup vault create, policy list/show', async () => {
    const g = await az(['group', 'create', '-n', RG, '-l', 'local']);
    expect(g.code, g.err).toBe(0);
    expect(g.json).toMatchObject({ name: RG, properties: { provisioningState: 'Succeeded' } });
    const v = await az(['backup', 'vault', 'create', '-n', 'azvault', '-g', RG, '-l', 'local']);
    expect(v.code, v.err).toBe(0);
    expect(v.json).toMatchObject({ name: 'azvault', type: 'Microsoft.RecoveryServices/vaults', properties: { provisioningState: 'Succeeded' } });
    const pl = await az(['backup', 'policy', 'list', '--vault-name', 'azvault', '-g', RG]);
    expect(pl.code, pl.err).toBe(0);
    expect((pl.json as { name: string }[]).map((p) => p.name)).toEqual(['DefaultPolicy']);
    const ps = await az(['backup', 'policy', 'show', '--vault-name', 'azvault', '-g', RG, '-n', 'DefaultPolicy']);
    expect(ps.json).toMatchObject({ name: 'DefaultPolicy', properties: { backupManagementType: 'AzureIaasVM' } });
    const sc = await az(['backup', 'vault', 'backup-properties', 'show', '-n', 'azvault', '-g', RG]);
    expect(sc.code, sc.err).toBe(0);
  }, 60_000);

  it('enable-for-vm (shim), backup-now, job list/show, item list; a preflight failure prints its code', async () => {
    await f.keyVault(KV);
    await f.vm('vmaz');
    await f.encrypt('vmaz', KV);
    // without Key Vault access: the ConfigureBackup job fails with the documented code
    const bad = await az(['backup', 'protection', 'enable-for-vm', '--vault-name', 'azvault', '-g', RG, '--vm', f.vmId('vmaz'), '--policy-name', 'DefaultPolicy'], { shim: true });
    // az prints the failed ConfigureBackup job (as against Azure), with the code and the missing permissions
    expect(bad.json).toMatchObject({ properties: { operation: 'ConfigureBackup', status: 'Failed', errorDetails: [{ errorTitle: 'UserErrorKeyVaultPermissionsNotConfigured' }] } });
    expect(bad.out).toMatch(/missing: keys get, keys list, keys backup, secrets get, secrets list, secrets backup/);
    await f.grantBackup(KV);
    const en = await az(['backup', 'protection', 'enable-for-vm', '--vault-name', 'azvault', '-g', RG, '--vm', f.vmId('vmaz'), '--policy-name', 'DefaultPolicy'], { shim: true });
    expect(en.code, en.err).toBe(0);
    expect(en.json).toMatchObject({ properties: { operation: 'ConfigureBackup', status: 'Completed', entityFriendlyName: 'vmaz' } });
    const items = await az(['backup', 'item', 'list', '--vault-name', 'azvault', '-g', RG]);
    expect(items.code, items.err).toBe(0);
    expect((items.json as { properties: { friendlyName: string; protectionState: string } }[])[0]!.properties).toMatchObject({ friendlyName: 'vmaz', protectionState: 'IRPending' });
    const bn = await az(['backup', 'protection', 'backup-now', '--vault-name', 'azvault', '-g', RG, '--container-name', 'vmaz', '--item-name', 'vmaz', '--backup-management-type', 'AzureIaasVM', '--retain-until', '01-01-2099']);
    expect(bn.code, bn.err).toBe(0);
    const job = bn.json as { name: string; properties: { operation: string } };
    expect(job.properties.operation).toBe('Backup');
    const wait = await f.waitJob('azvault', job.name);
    expect(wait.properties.status).toBe('Completed');
    const show = await az(['backup', 'job', 'show', '--vault-name', 'azvault', '-g', RG, '-n', job.name]);
    expect(show.code, show.err).toBe(0);
    expect(show.json).toMatchObject({ name: job.name, properties: { status: 'Completed', operation: 'Backup' } });
    const jl = await az(['backup', 'job', 'list', '--vault-name', 'azvault', '-g', RG]);
    expect(jl.code, jl.err).toBe(0);
    expect((jl.json as { properties: { operation: string } }[]).map((j) => j.properties.operation)).toEqual(expect.arrayContaining(['Backup', 'ConfigureBackup']));
    const rp = await az(['backup', 'recoverypoint', 'list', '--vault-name', 'azvault', '-g', RG, '--container-name', 'vmaz', '--item-name', 'vmaz', '--backup-management-type', 'AzureIaasVM']);
    expect(rp.code, rp.err).toBe(0);
    expect((rp.json as unknown[]).length).toBe(1);
    // stop protection and delete the data (az needs 202 + Azure-AsyncOperation on the DELETE)
    const dis = await az(['backup', 'protection', 'disable', '--vault-name', 'azvault', '-g', RG, '--container-name', 'vmaz', '--item-name', 'vmaz', '--backup-management-type', 'AzureIaasVM', '--delete-backup-data', 'true', '--yes']);
    expect(dis.code, dis.err).toBe(0);
    expect(dis.json).toMatchObject({ properties: { operation: 'DeleteBackupData', status: 'Completed' } });
    expect((await f.item('azvault', 'vmaz')).properties.isScheduledForDeferredDelete).toBe(true);
  }, 90_000);
});
