/**
 * Template deployments of the restore template by the real clients, unmodified, against the real server: after a real
 * backup and RestoreDisks, the Debian az 2.45 runs `deployment group validate` and `deployment group create` with the
 * template as a file written with comments and trailing commas (JSONC, which az sends verbatim with an unquoted
 * `template:` key) and with `--template-uri` = the restore job's Template Blob Uri + SAS; the Python management SDK
 * (azure.mgmt.resource) runs `begin_validate` and `begin_create_or_update` with a templateLink (@azure/arm-resources 7
 * has no deployments operations any more). Each creates the VM from the restored disks. Raw JSONC bodies (comments,
 * trailing commas) validate. Linked templates are read only from this installation's blobs (never another host).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import https from 'node:https';
import { startTestServer, ROOT, type TestServer } from './helpers/server.js';
import { azSession, type AzSession } from './helpers/az.js';
import { Fixture, env } from './recovery-fixture.js';
import { backupAndRestoreToStorage } from './restore-helpers.js';

let s: TestServer;
let f: Fixture;
let cfg: string;
const RG = 'rg-wdp';
const suffix = randomBytes(3).toString('hex');
const KV = `kvwdp-${suffix}`;
const SA = `stwdp${suffix}`;
const RSV = 'rsvwdp';
const VM = 'vmwdp';
const ST = { 'api-version': '2023-01-01' };
const CP = { 'api-version': '2022-08-01' };
let bag: Record<string, string>;
let template: string;

let azs: AzSession;
const az: AzSession['az'] = (args, o) => azs.az(args, o);

const saId = () => `${f.rgPath()}/providers/Microsoft.Storage/storageAccounts/${SA}`;
async function sasOf(uri: string): Promise<string> {
  const r = await s.client.request<{ serviceSasToken: string }>('POST', `${saId()}/listServiceSas`, { query: ST, body: { canonicalizedResource: `/blob/${SA}${new URL(uri).pathname}`, signedResource: 'b', signedPermission: 'r', signedExpiry: new Date(Date.now() + 600_000).toISOString() } });
  return `${uri}?${r.serviceSasToken}`;
}

/** The VM exists, attached to the disks its deployment imported from the restored blobs. */
async function expectRestoredVm(name: string) {
  const vm = await s.client.request<{ properties: { provisioningState: string; storageProfile: { osDisk: { managedDisk: { id: string }; encryptionSettings?: { enabled: boolean } } } } }>('GET', f.vmId(name), { query: CP });
  expect(vm.properties.provisioningState).toBe('Succeeded');
  const diskId = vm.properties.storageProfile.osDisk.managedDisk.id;
  expect(diskId.toLowerCase()).toBe(`${f.rgPath()}/providers/Microsoft.Compute/disks/${name}-osdisk`.toLowerCase());
  const disk = await s.client.request<{ managedBy: string; properties: { creationData: { createOption: string; sourceUri: string } } }>('GET', diskId, { query: CP });
  expect(disk.managedBy.toLowerCase()).toBe(f.vmId(name).toLowerCase());
  expect(disk.properties.creationData).toMatchObject({ createOption: 'Import', sourceUri: bag['OS Disk Blob Uri'] });
}

beforeAll(async () => {
  s = await startTestServer({ env });
  f = new Fixture(s, RG);
  bag = await backupAndRestoreToStorage(f, { kv: KV, vm: VM, rsv: RSV, sa: SA });
  template = readFileSync(path.join(s.dataDir, 'storage', SA, bag['Config Blob Container Name']!, bag['Template Blob Uri']!.split('/').pop()!), 'utf8');
  // sslCertFile: az reads --template-uri itself with urllib (ssl.create_default_context): OpenSSL's trust-store variable.
  azs = await azSession(s, { sslCertFile: true, prefix: 'rsv-wdp-' });
  cfg = azs.dir;
}, 240_000);

afterAll(async () => {
  await s?.stop();
  azs?.close();
  if (f) rmSync(f.tmp, { recursive: true, force: true });
});

describe('az 2.45: deployment group validate / create of the restore template', () => {
  it('a template file with comments: validate, then create → the VM exists with the restored disks', async () => {
    // The restore template as a person edits it, with comments (az parses the file itself, stripping comments, but
    // sends it verbatim, so the service must accept them as ARM does).
    const jsonc = `// restored by rsvault: ${bag['Config Blob Container Name']}\n` + template
      .replace('"contentVersion": "1.0.0.0",', '"contentVersion": "1.0.0.0", // keep\n  /* the restored disks,\n     then the VM */')
      .replace(/("outputs": \{\})/, '$1 // no outputs\n');
    expect(() => JSON.parse(jsonc) as unknown).toThrow();
    const file = path.join(cfg, 'azuredeploy.jsonc.json');
    writeFileSync(file, jsonc);
    const v = await az(['deployment', 'group', 'validate', '-g', RG, '-n', 'dep-validate', '--template-file', file, '--parameters', 'VirtualMachineName=vmaz1']);
    expect(v.code, v.err).toBe(0);
    expect(v.json).toMatchObject({ properties: { provisioningState: 'Succeeded', mode: 'Incremental', parameters: { VirtualMachineName: { value: 'vmaz1' } } } });
    expect((v.json as { properties: { validatedResources: { id: string }[] } }).properties.validatedResources.map((r) => r.id.split('/').pop())).toEqual(['vmaz1-osdisk', 'vmaz1']);
    // validation created nothing and recorded no deployment
    expect((await s.client.send('GET', f.vmId('vmaz1'), { query: CP })).status).toBe(404);
    expect((await s.client.send('GET', `${f.rgPath()}/providers/Microsoft.Resources/deployments/dep-validate`, { query: { 'api-version': '2021-04-01' } })).status).toBe(404);

    const c = await az(['deployment', 'group', 'create', '-g', RG, '-n', 'dep-file', '--template-file', file, '--parameters', 'VirtualMachineName=vmaz1']);
    expect(c.code, c.err).toBe(0);
    expect(c.json).toMatchObject({ name: 'dep-file', properties: { provisioningState: 'Succeeded' } });
    await expectRestoredVm('vmaz1');
  }, 120_000);

  it('--template-uri with the restore job\'s Template Blob Uri + SAS: validate and create → the VM exists', async () => {
    const uri = await sasOf(bag['Template Blob Uri']!);
    expect(uri).toMatch(new RegExp(`^https://${SA}\\.blob\\.localhost:${s.port}/`));
    const v = await az(['deployment', 'group', 'validate', '-g', RG, '--template-uri', uri, '--parameters', 'VirtualMachineName=vmaz2']);
    expect(v.code, v.err).toBe(0);
    const c = await az(['deployment', 'group', 'create', '-g', RG, '-n', 'dep-uri', '--template-uri', uri, '--parameters', 'VirtualMachineName=vmaz2']);
    expect(c.code, c.err).toBe(0);
    expect(c.json).toMatchObject({ properties: { provisioningState: 'Succeeded', templateLink: { uri: expect.stringContaining('sig=REDACTED') as unknown } } });
    expect(c.out).not.toContain(new URL(uri).searchParams.get('sig')!);
    await expectRestoredVm('vmaz2');
  }, 120_000);

  it('an invalid template fails validation with InvalidTemplate (exit 1) and creates nothing', async () => {
    const bad = path.join(cfg, 'bad.json');
    writeFileSync(bad, template.replace("[parameters('location')]", "[parameters('nosuch')]"));
    const v = await az(['deployment', 'group', 'validate', '-g', RG, '--template-file', bad, '--parameters', 'VirtualMachineName=vmaz3']);
    expect(v.code).toBe(1);
    expect(v.err).toMatch(/InvalidTemplate/);
    expect((await s.client.send('GET', f.vmId('vmaz3'), { query: CP })).status).toBe(404);
  }, 60_000);
});

describe('the ARM wire: JSONC bodies, the Python SDK (azure.mgmt.resource) with a templateLink, SSRF', () => {
  it('a deployment body with comments and trailing commas (as ARM accepts) validates; a broken one is InvalidRequestContent', async () => {
    const token = await s.client.token();
    const send = (body: string, at = f.rgPath()) => new Promise<{ status: number; body: string }>((resolve, reject) => {
      const r = https.request(`${s.origin}${at}/providers/Microsoft.Resources/deployments/dep-jsonc/validate?api-version=2021-04-01`, { method: 'POST', ca: s.ca, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } }, (res) => {
        let b = '';
        res.on('data', (d: Buffer) => (b += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b }));
      });
      r.on('error', reject);
      r.end(body);
    });
    const jsonc = `{ "properties": { "mode": "Incremental", /* inline */ "parameters": { "VirtualMachineName": { "value": "vmjsonc", }, },
      template: ${template.replace(/\n(\s*)\]/g, ',\n$1]').replace(/\n(\s*)\}/g, ',\n$1}').replace(/,$/, '')} // the template, trailing commas included
    }, }`;
    const ok = await send(jsonc);
    expect(ok.status, ok.body).toBe(200);
    expect((JSON.parse(ok.body) as { properties: { validatedResources: { id: string }[] } }).properties.validatedResources.map((r) => r.id.split('/').pop())).toEqual(['vmjsonc-osdisk', 'vmjsonc']);
    const broken = await send('{ "properties": { "mode": "Incremental", /* unterminated ');
    expect([broken.status, (JSON.parse(broken.body) as { error: { code: string } }).error.code]).toEqual([400, 'InvalidRequestContent']);
    // subscription and tenant scope: a clear refusal, not a 404
    for (const at of [`/subscriptions/${f.sub}`, '']) {
      const r = await send(jsonc, at);
      expect([r.status, (JSON.parse(r.body) as { error: { code: string } }).error.code], at || 'tenant').toEqual([400, 'UnsupportedDeploymentScope']);
    }
  }, 60_000);

  it('begin_validate / begin_create_or_update with templateLink = the SAS URL deploy the VM; other hosts and non-blob URLs are refused', async () => {
    const uri = await sasOf(bag['Template Blob Uri']!);
    const badUris = [
      'https://127.0.0.1:9/azuredeploy.json',
      `https://localhost:${s.port}/metadata/endpoints?api-version=2015-01-01`,
      'https://example.com/blob/acct/cont/t.json',
      `http://${SA}.blob.localhost:${s.port}/c/t.json`,
      uri.replace(/sig=[^&]+/, 'sig=AAAA'),
    ];
    const args = { origin: s.origin, clientId: s.creds.clientId, clientSecret: s.creds.clientSecret, subscriptionId: f.sub, rg: RG, vm: 'vmpy', uri, badUris };
    const r = spawnSync('/usr/bin/python3', [path.join(ROOT, 'test', 'clients', 'deploy_py.py'), JSON.stringify(args)], { env: { ...process.env, REQUESTS_CA_BUNDLE: s.creds.caPath, PYTHONPATH: '' }, encoding: 'utf8', timeout: 110_000 });
    expect(r.stderr).not.toMatch(/Traceback/);
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { validate: unknown; create: unknown; bad: { status: number; code: string; message: string }[] };
    expect(out.validate).toEqual({ state: 'Succeeded', resources: ['vmpy-osdisk', 'vmpy'] });
    expect(out.create).toEqual({ state: 'Succeeded', resources: ['vmpy-osdisk', 'vmpy'] });
    await expectRestoredVm('vmpy');
    expect(out.bad.map((b) => [b.status, b.code])).toEqual(badUris.map(() => [400, 'InvalidTemplateLink']));
    expect(out.bad[4]!.message).toMatch(/AuthenticationFailed/);
    expect(out.bad.map((b) => b.message).join(' ')).not.toContain(new URL(uri).searchParams.get('sig')!);
  }, 120_000);
});
