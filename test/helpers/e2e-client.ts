/**
 * One whole-flow test for an official Azure SDK client (issue #13): the client script (test/clients/) runs, unmodified
 * and with nothing but its language's CA setting, resource group → key vault (enabledForDiskEncryption, the "Azure
 * Backup" access policy for the Backup Management Service) → KEK → VM with an OS and a data disk → ADE → recovery
 * services vault → protect → backup → more guest bytes → incremental backup → RestoreDisks → the outputs (restored disk
 * blob, VM config, template) downloaded with the Storage SDK → deployment of the template → start → the restored VM
 * reads the original bytes and the later ones. The script prints one JSON object: the steps done and what each saw.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startTestServer, type TestServer } from './server.js';
import { env } from '../recovery-fixture.js';

const MiB = 1024 * 1024;

export interface ClientFlow {
  /** The describe() title. */
  title: string;
  /** Short tag for resource names (rg-e2e-{tag}, kv{tag}-…). */
  tag: string;
  /** The client process: executable, script arguments, and the environment it needs (CA bundle only). */
  command: (s: TestServer) => { cmd: string; args: string[]; env: Record<string, string> };
}

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

export function clientFlowSuite(flow: ClientFlow): void {
  let s: TestServer;
  // The VM's disk images, in the server's import directory (the test server imports from the system temp dir).
  const tmp = mkdtempSync(path.join(os.tmpdir(), `rsv-e2e-${flow.tag}-`));
  beforeAll(async () => {
    writeFileSync(path.join(tmp, 'os.raw'), randomBytes(16 * MiB));
    writeFileSync(path.join(tmp, 'data.raw'), randomBytes(8 * MiB));
    s = await startTestServer({ env });
  }, 60_000);
  afterAll(async () => {
    await s?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  describe(flow.title, () => {
    it('every step succeeds and the restored VM reads what the original wrote before each backup', async () => {
      const sfx = randomBytes(3).toString('hex');
      const t = flow.tag;
      const args = {
        origin: s.origin, port: s.port, tenantId: s.creds.tenantId, clientId: s.creds.clientId, clientSecret: s.creds.clientSecret, objectId: s.creds.objectId, sub: s.creds.subscriptionId,
        rg: `rg-e2e-${t}`, kv: `kv${t}-${sfx}`, vm: `vm${t}`, rsv: `rsv${t}`, sa: `st${t}${sfx}`, restoredVm: `vm${t}-restored`,
        off1: 1 * MiB, bytes1: randomBytes(64).toString('hex'), off2: 12 * MiB, bytes2: randomBytes(64).toString('hex'),
        osImage: path.join(tmp, 'os.raw'), dataImage: path.join(tmp, 'data.raw'),
      };
      const c = flow.command(s);
      const r = await run(c.cmd, [...c.args, JSON.stringify(args)], c.env);
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
}
