/**
 * The Python Azure SDKs (Debian python3-azure, /usr/bin/python3), unmodified, run the whole encrypted-VM
 * backup-and-restore flow against the real server (test/clients/e2e_py.py, REQUESTS_CA_BUNDLE only): resource group → key vault (enabledForDiskEncryption, the
 * "Azure Backup" access policy for the Backup Management Service) → KEK → VM with an OS and a data disk → ADE →
 * recovery services vault → protect → backup → more guest bytes → incremental backup → RestoreDisks → the outputs
 * (restored disk blob, VM config, template) downloaded with azure.storage.blob → deployment of the template →
 * start → the restored VM reads the original bytes and the later ones.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startTestServer, ROOT, type TestServer } from './helpers/server.js';
import { env } from './recovery-fixture.js';

let s: TestServer;
// The VM's disk images, in the server's import directory (the test server imports from the system temp dir).
const tmp = mkdtempSync(path.join(os.tmpdir(), 'rsv-e2e-py-'));
const MiB = 1024 * 1024;
beforeAll(async () => {
  writeFileSync(path.join(tmp, 'os.raw'), randomBytes(16 * MiB));
  writeFileSync(path.join(tmp, 'data.raw'), randomBytes(8 * MiB));
  s = await startTestServer({ env });
}, 60_000);
afterAll(async () => {
  await s?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

function run(cmd: string, args: string[], extra: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { env: { ...process.env, ...extra }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('azure.* Python SDKs: create → encrypt → protect → backup → incremental → restore disks → download → deploy → start → read', () => {
  it('every step succeeds and the restored VM reads what the original wrote before each backup', async () => {
    const sfx = randomBytes(3).toString('hex');
    const args = {
      origin: s.origin, port: s.port, tenantId: s.creds.tenantId, clientId: s.creds.clientId, clientSecret: s.creds.clientSecret, objectId: s.creds.objectId, sub: s.creds.subscriptionId,
      rg: 'rg-e2e-py', kv: `kvpy-${sfx}`, vm: 'vmpy', rsv: 'rsvpy', sa: `stpy${sfx}`, restoredVm: 'vmpy-restored',
      off1: 1 * MiB, bytes1: randomBytes(64).toString('hex'), off2: 12 * MiB, bytes2: randomBytes(64).toString('hex'),
      osImage: path.join(tmp, 'os.raw'), dataImage: path.join(tmp, 'data.raw'),
    };
    // PYTHONPATH cleared: the Debian interpreter with its own dist-packages only.
    const r = await run('/usr/bin/python3', [path.join(ROOT, 'test', 'clients', 'e2e_py.py'), JSON.stringify(args)], { REQUESTS_CA_BUNDLE: s.creds.caPath, PYTHONPATH: '' });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as Record<string, unknown> & { steps: string[]; failed?: unknown };
    expect(out.failed, JSON.stringify(out, null, 1)).toBeUndefined();
    expect(out.steps).toEqual(['group', 'keyVault', 'kek', 'vm', 'encrypt', 'guestWrite1', 'vault', 'protect', 'backup1', 'guestWrite2', 'backup2', 'recoveryPoints', 'storageAccount', 'restoreDisks', 'download', 'deploy', 'start', 'guestRead']);
    expect(out.keyVault).toEqual({ vaultUri: `https://${args.kv}.vault.localhost:${s.port}/`, enabledForDiskEncryption: true });
    expect(out.vm).toEqual({ state: 'Succeeded', disks: 2 });
    expect(out.encrypt).toEqual({ state: 'Succeeded', diskEncrypted: [true, true] });
    expect(out.protect).toBe('IRPending');
    expect(out.backup1).toMatchObject({ status: 'Completed', bag: { 'Backup Type': 'Full' } });
    expect(out.backup2).toMatchObject({ status: 'Completed', bag: { 'Backup Type': 'Incremental' } });
    expect((out.recoveryPoints as { encrypted: boolean }[]).map((p) => p.encrypted)).toEqual([true, true]);
    const dl = out.download as { blobs: string[]; vhdBytes: number; vhdHead: string };
    expect(dl.blobs.some((b) => b.startsWith('config-')) && dl.blobs.some((b) => b.startsWith('azuredeploy-'))).toBe(true);
    expect(dl.vhdHead).toBe(Buffer.from('LUKS\xba\xbe', 'latin1').toString('hex'));
    expect(dl.vhdBytes).toBeGreaterThan(16 * MiB);
    expect(out.deploy).toMatchObject({ state: 'Succeeded' });
    expect(out.start).toContain('PowerState/running');
    expect(out.guestRead).toEqual({ bytes1: args.bytes1, bytes2: args.bytes2 });
  }, 150_000);
});
