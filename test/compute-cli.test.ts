/**
 * `rsvault vm` / `rsvault disk` end to end through the CLI binary: import, VM create, guest I/O by file, ADE enable
 * without a KEK (content type BEK), encryption show, export via grant-access, upload, and one-line errors.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import https from 'node:https';
import { runCli, startTestServer, type TestServer } from './helpers/server.js';

let s: TestServer;
let tmp: string;
let env: Record<string, string>;
const KV = `kvcli-${randomBytes(3).toString('hex')}`;
const cli = async (...args: string[]) => {
  const r = await runCli(args, env);
  if (r.code !== 0) throw new Error(`rsvault ${args.join(' ')} → ${r.code}\n${r.stderr}`);
  return r.stdout;
};

beforeAll(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'compute-cli-'));
  s = await startTestServer({ env: { RSVAULT_LUKS_ITERATIONS: '1000' } });
  env = { RSVAULT_CONFIG_DIR: path.join(tmp, 'cfg') };
  await cli('login', '--server', s.origin, '--service-principal', '-u', s.creds.clientId, '-p', s.creds.clientSecret, '--tenant', s.creds.tenantId, '--ca-file', s.creds.caPath);
  await cli('group', 'create', '-n', 'rgc', '-l', 'local');
  const sub = s.creds.subscriptionId;
  await s.client.request('PUT', `/subscriptions/${sub}/resourceGroups/rgc/providers/Microsoft.KeyVault/vaults/${KV}`, {
    query: { 'api-version': '2023-07-01' },
    body: { location: 'local', properties: { tenantId: s.creds.tenantId, sku: { family: 'A', name: 'standard' }, accessPolicies: [{ tenantId: s.creds.tenantId, objectId: s.creds.objectId, permissions: { keys: ['all'], secrets: ['all'] } }], enabledForDiskEncryption: true } },
  });
}, 120_000);

afterAll(async () => {
  await s?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

describe('rsvault vm / disk', () => {
  it('import, create VM, guest write/read, encryption enable (BEK only) + show, qemu-img opens it', async () => {
    const img = path.join(tmp, 'os.raw');
    writeFileSync(img, randomBytes(4 * 1024 * 1024));
    const d = JSON.parse(await cli('disk', 'import', '-g', 'rgc', '-n', 'os1', '--source', img, '--os-type', 'Linux')) as { properties: { diskSizeBytes: number } };
    expect(d.properties.diskSizeBytes).toBe(4 * 1024 * 1024);
    await cli('disk', 'create', '-g', 'rgc', '-n', 'data1', '--size-gb', '1');
    const vm = JSON.parse(await cli('vm', 'create', '-g', 'rgc', '-n', 'vmc', '--attach-os-disk', 'os1', '--attach-data-disks', 'data1')) as { properties: { storageProfile: { dataDisks: { lun: number }[] } } };
    expect(vm.properties.storageProfile.dataDisks[0]!.lun).toBe(0);
    const tsv = await cli('vm', 'list', '-g', 'rgc', '-o', 'tsv');
    expect(tsv).toMatch(/vmc/);

    const payload = randomBytes(3000);
    writeFileSync(path.join(tmp, 'in.bin'), payload);
    await cli('vm', 'disk', 'write', '-g', 'rgc', '--vm', 'vmc', '--os-disk', '--offset', '1000', '--file', path.join(tmp, 'in.bin'));
    await cli('vm', 'encryption', 'enable', '-g', 'rgc', '-n', 'vmc', '--disk-encryption-keyvault', KV, '--volume-type', 'OS');
    await cli('vm', 'disk', 'read', '-g', 'rgc', '--vm', 'vmc', '--os-disk', '--offset', '1000', '--length', '3000', '--file', path.join(tmp, 'out.bin'));
    expect(readFileSync(path.join(tmp, 'out.bin')).equals(payload)).toBe(true);
    const show = JSON.parse(await cli('vm', 'encryption', 'show', '-g', 'rgc', '-n', 'vmc')) as { disks: { name: string; encrypted: boolean; encryptionSettings: { diskEncryptionKey: { secretUrl: string } }[] }[] };
    expect(show.disks.map((x) => [x.name, x.encrypted])).toEqual([['os1', true], ['data1', false]]);
    const secretUrl = show.disks[0]!.encryptionSettings[0]!.diskEncryptionKey.secretUrl;
    const [, , name, version] = new URL(secretUrl).pathname.split('/');
    const fresh = s.clientFor(s.creds.clientId, s.creds.clientSecret); // no idle keep-alive socket after the CLI runs
    const secret = await fresh.request<{ value: string; contentType: string; tags: Record<string, string> }>('GET', `/secrets/${name}/${version}`, { baseUrl: `https://${KV}.vault.localhost:${s.port}`, resource: 'https://vault.localhost', query: { 'api-version': '7.4' } });
    fresh.close();
    expect(secret.contentType).toBe('BEK');
    expect(secret.tags).toMatchObject({ DiskEncryptionKeyFileName: 'LinuxPassPhraseFileName', MachineName: 'vmc' });
    const bek = Buffer.from(secret.value, 'base64').toString('ascii');
    const diskShow = JSON.parse(await cli('disk', 'show', '-g', 'rgc', '-n', 'os1')) as { properties: { rsvault: { imagePath: string } } };
    const out = path.join(tmp, 'q.raw');
    execFileSync('qemu-img', ['convert', '--object', `secret,id=s,data=${bek}`, '--image-opts', `driver=luks,key-secret=s,file.filename=${diskShow.properties.rsvault.imagePath}`, '-O', 'raw', out]);
    expect(readFileSync(out).subarray(1000, 4000).equals(payload)).toBe(true);
  });

  it('grant-access exports raw bytes; upload creates a disk from a file; errors are one line with exit 1', async () => {
    const up = path.join(tmp, 'up.raw');
    const bytes = randomBytes(1024 * 1024);
    writeFileSync(up, bytes);
    await cli('disk', 'upload', '-g', 'rgc', '-n', 'upl', '--file', up);
    const g = JSON.parse(await cli('disk', 'grant-access', '-g', 'rgc', '-n', 'upl', '--duration-in-seconds', '300')) as { accessSAS: string };
    const got = await new Promise<Buffer>((resolve, reject) => {
      https.get(g.accessSAS, { ca: s.ca }, (res) => {
        const c: Buffer[] = [];
        res.on('data', (x: Buffer) => c.push(x));
        res.on('end', () => resolve(Buffer.concat(c)));
      }).on('error', reject);
    });
    expect(got.equals(bytes)).toBe(true);
    await cli('disk', 'revoke-access', '-g', 'rgc', '-n', 'upl');

    const bad = await runCli(['vm', 'show', '-g', 'rgc', '-n', 'nosuchvm'], env);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^ERROR: \(ResourceNotFound\) /);
    expect(bad.stderr).not.toMatch(/at .*\.js/);
    const usage = await runCli(['vm', 'disk', 'read', '-g', 'rgc', '--vm', 'vmc', '--offset', '0', '--length', '1', '--file', path.join(tmp, 'x')], env);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/--lun N or --os-disk/);
    const enc = await runCli(['vm', 'encryption', 'enable', '-g', 'rgc', '-n', 'vmc', '--disk-encryption-keyvault', 'nokv'], env);
    expect(enc.code).toBe(1);
    expect(enc.stderr).toMatch(/KeyVaultNotFound/);
  });
});
