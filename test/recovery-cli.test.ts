/**
 * `rsvault backup …` (az's shapes) end to end: the documented encrypted flow through the CLI, errors as one line
 * `ERROR: (<code>) <message>` + recommendation with exit code 1.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { runCli, startTestServer, type TestServer } from './helpers/server.js';
import { Fixture, env as serverEnv } from './recovery-fixture.js';

let s: TestServer;
let f: Fixture;
let tmp: string;
let env: Record<string, string>;
const RG = 'rg-cli';
const KV = `kvcli-${randomBytes(3).toString('hex')}`;

const cli = async (...args: string[]) => {
  const r = await runCli(args, env);
  let json: unknown;
  try {
    json = r.stdout.trim() ? JSON.parse(r.stdout) : undefined;
  } catch {
    json = undefined;
  }
  return { ...r, json };
};

beforeAll(async () => {
  s = await startTestServer({ env: serverEnv });
  f = new Fixture(s, RG);
  tmp = mkdtempSync(path.join(os.tmpdir(), 'rsv-cli-'));
  env = { RSVAULT_CONFIG_DIR: path.join(tmp, 'cfg') };
  await cli('login', '--server', s.origin, '--service-principal', '-u', s.creds.clientId, '-p', s.creds.clientSecret, '--tenant', s.creds.tenantId, '--ca-file', s.creds.caPath);
  await f.group();
  await f.keyVault(KV);
  await f.vm('vmcli');
  await f.encrypt('vmcli', KV);
}, 120_000);
afterAll(async () => {
  await s?.stop();
  rmSync(tmp, { recursive: true, force: true });
  if (f) rmSync(f.tmp, { recursive: true, force: true });
});

describe('rsvault backup', () => {
  it('vault → DefaultPolicy → enable without access (error) → grant → enable → backup-now → job/item/recoverypoint', async () => {
    const v = await cli('backup', 'vault', 'create', '-n', 'clivault', '-g', RG, '-l', 'local');
    expect(v.code, v.stderr).toBe(0);
    expect(v.json).toMatchObject({ name: 'clivault', properties: { provisioningState: 'Succeeded' } });
    expect(((await cli('backup', 'vault', 'list', '-g', RG)).json as { name: string }[]).map((x) => x.name)).toEqual(['clivault']);
    const setp = await cli('backup', 'vault', 'backup-properties', 'set', '-n', 'clivault', '-g', RG, '--backup-storage-redundancy', 'LocallyRedundant');
    expect(setp.json).toMatchObject({ properties: { storageType: 'LocallyRedundant' } });
    const pl = await cli('backup', 'policy', 'list', '--vault-name', 'clivault', '-g', RG);
    expect((pl.json as { name: string }[]).map((p) => p.name)).toEqual(['DefaultPolicy']);

    const bad = await cli('backup', 'protection', 'enable-for-vm', '--vault-name', 'clivault', '-g', RG, '--vm', 'vmcli', '--policy-name', 'DefaultPolicy');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^ERROR: \(UserErrorKeyVaultPermissionsNotConfigured\) .*missing: keys get, keys list, keys backup, secrets get, secrets list, secrets backup/m);
    expect(bad.stderr).toMatch(/^Recommendation: .*az keyvault set-policy/m);
    expect(bad.stderr).not.toMatch(/at .*\.js:\d+/); // no stack trace

    await f.grantBackup(KV);
    const en = await cli('backup', 'protection', 'enable-for-vm', '--vault-name', 'clivault', '-g', RG, '--vm', 'vmcli', '--policy-name', 'DefaultPolicy');
    expect(en.code, en.stderr).toBe(0);
    expect(en.json).toMatchObject({ properties: { operation: 'ConfigureBackup', status: 'Completed' } });

    const bn = await cli('backup', 'protection', 'backup-now', '--vault-name', 'clivault', '-g', RG, '-c', 'vmcli', '-i', 'vmcli', '--retain-until', '01-01-2099');
    expect(bn.code, bn.stderr).toBe(0);
    const job = bn.json as { name: string; properties: { status: string; extendedInfo: { tasksList: { taskId: string; status: string }[] } } };
    expect(job.properties.status).toBe('Completed');
    expect(job.properties.extendedInfo.tasksList.every((t) => t.status === 'Completed')).toBe(true);

    const nw = await cli('backup', 'protection', 'backup-now', '--vault-name', 'clivault', '-g', RG, '-c', 'vmcli', '-i', 'vmcli', '--no-wait');
    expect(nw.code, nw.stderr).toBe(0);
    const nwJob = nw.json as { name: string };
    const w = await cli('backup', 'job', 'wait', '--vault-name', 'clivault', '-g', RG, '-n', nwJob.name);
    expect(w.json).toMatchObject({ properties: { status: 'Completed' } });

    const jl = await cli('backup', 'job', 'list', '--vault-name', 'clivault', '-g', RG, '--operation', 'Backup', '--status', 'Completed');
    expect((jl.json as unknown[]).length).toBe(2);
    const js = await cli('backup', 'job', 'show', '--vault-name', 'clivault', '-g', RG, '-n', job.name);
    expect(js.json).toMatchObject({ name: job.name });
    const stop = await cli('backup', 'job', 'stop', '--vault-name', 'clivault', '-g', RG, '-n', job.name);
    expect(stop.code).toBe(1);
    expect(stop.stderr).toMatch(/BMSUserErrorJobNotCancellable/);

    const items = await cli('backup', 'item', 'list', '--vault-name', 'clivault', '-g', RG, '-o', 'table');
    expect(items.code).toBe(0);
    expect(items.stdout).toMatch(/vmcli/);
    const item = await cli('backup', 'item', 'show', '--vault-name', 'clivault', '-g', RG, '-c', 'vmcli', '-n', 'vmcli');
    expect(item.json).toMatchObject({ properties: { protectionState: 'Protected', lastBackupStatus: 'Completed' } });

    const rps = await cli('backup', 'recoverypoint', 'list', '--vault-name', 'clivault', '-g', RG, '-c', 'vmcli', '-i', 'vmcli');
    const list = rps.json as { name: string }[];
    expect(list).toHaveLength(2);
    const rp = await cli('backup', 'recoverypoint', 'show', '--vault-name', 'clivault', '-g', RG, '-c', 'vmcli', '-i', 'vmcli', '-n', list[0]!.name);
    expect(rp.json).toMatchObject({ properties: { isSourceVMEncrypted: true, keyAndSecret: { encryptionMechanism: 'SinglePass' } } });

    const locked = await cli('backup', 'vault', 'backup-properties', 'set', '-n', 'clivault', '-g', RG, '--backup-storage-redundancy', 'GeoRedundant');
    expect(locked.code).toBe(1);
    expect(locked.stderr).toMatch(/UserErrorVaultHasProtectedItems/);

    const dis = await cli('backup', 'protection', 'disable', '--vault-name', 'clivault', '-g', RG, '-c', 'vmcli', '-i', 'vmcli', '--yes');
    expect(dis.json).toMatchObject({ properties: { operation: 'DisableBackup', status: 'Completed' } });
    const res = await cli('backup', 'protection', 'resume', '--vault-name', 'clivault', '-g', RG, '-c', 'vmcli', '-i', 'vmcli', '-p', 'DefaultPolicy');
    expect(res.json).toMatchObject({ properties: { operation: 'ConfigureBackup', status: 'Completed' } });

    const badPol = await cli('backup', 'policy', 'create', '--vault-name', 'clivault', '-g', RG, '-n', 'pol2', '--policy', '{"backupManagementType":"AzureIaasVM"}');
    expect(badPol.code).toBe(1);
    expect(badPol.stderr).toMatch(/^ERROR: \(BMSUserErrorInvalidPolicyInput\)/m);
  }, 90_000);
});
