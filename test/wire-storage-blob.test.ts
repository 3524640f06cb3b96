/**
 * Restore outputs through the official Azure Storage SDKs, unmodified, against the real server: after a real backup and
 * RestoreDisks to a storage account, @azure/storage-blob (Node, NODE_EXTRA_CA_CERTS) and azure.storage.blob (Debian
 * python3-azure, REQUESTS_CA_BUNDLE) list the containers and blobs, read the properties and download the restored disk
 * and the template — whole and ranged (206 + Content-Range, byte for byte), with (a) a bearer token for
 * https://storage.azure.com, (b) SAS URLs (the server's listServiceSas, and one the SDK signs with the listed key),
 * (c) Shared Key with the keys of listKeys. Bad ranges answer 416 InvalidRange; errors are Azure Storage XML.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { startTestServer, ROOT, type TestServer } from './helpers/server.js';
import { Fixture, MiB, env } from './recovery-fixture.js';
import { backupAndRestoreToStorage, get } from './restore-helpers.js';

let s: TestServer;
let f: Fixture;
const RG = 'rg-wsb';
const suffix = randomBytes(3).toString('hex');
const KV = `kvwsb-${suffix}`;
const SA = `stwsb${suffix}`;
const RSV = 'rsvwsb';
const VM = 'vmwsb';
const ST = { 'api-version': '2023-01-01' };
let bag: Record<string, string>;
let container: string;
let osBlob: string;
let templateBlob: string;
let diskBytes: Buffer;
let templateText: string;
let accountKey: string;

const saId = () => `${f.rgPath()}/providers/Microsoft.Storage/storageAccounts/${SA}`;
const endpoint = () => `https://${SA}.blob.localhost:${s.port}/`;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function run(cmd: string, args: string[], extraEnv: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, PYTHONPATH: '', ...extraEnv }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A raw HTTPS request to the blob plane (for the wire details the SDKs hide). */
function raw(method: string, url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const r = https.request(url, { method, ca: s.ca, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    r.on('error', reject);
    r.end();
  });
}

async function sasUrl(blob: string): Promise<string> {
  const r = await s.client.request<{ serviceSasToken: string }>('POST', `${saId()}/listServiceSas`, { query: ST, body: { canonicalizedResource: `/blob/${SA}/${container}/${blob}`, signedResource: 'b', signedPermission: 'r', signedExpiry: new Date(Date.now() + 600_000).toISOString() } });
  return `${endpoint()}${container}/${blob}?${r.serviceSasToken}`;
}

beforeAll(async () => {
  s = await startTestServer({ env });
  f = new Fixture(s, RG);
  bag = await backupAndRestoreToStorage(f, { kv: KV, vm: VM, rsv: RSV, sa: SA });
  container = bag['Config Blob Container Name']!;
  osBlob = decodeURIComponent(bag['OS Disk Blob Uri']!.split('/').pop()!);
  templateBlob = decodeURIComponent(bag['Template Blob Uri']!.split('/').pop()!);
  // The reference bytes: the blob files as the server stored them.
  diskBytes = readFileSync(path.join(s.dataDir, 'storage', SA, container, osBlob));
  templateText = readFileSync(path.join(s.dataDir, 'storage', SA, container, templateBlob), 'utf8');
  const keys = await s.client.request<{ keys: { keyName: string; value: string; permissions: string }[] }>('POST', `${saId()}/listKeys`, { query: ST });
  expect(keys.keys.map((k) => [k.keyName, k.permissions])).toEqual([['key1', 'FULL'], ['key2', 'FULL']]);
  accountKey = keys.keys[0]!.value;
}, 180_000);

afterAll(async () => {
  await s?.stop();
  if (f) rmSync(f.tmp, { recursive: true, force: true });
});

describe('the blob plane at https://{account}.blob.localhost:{port}', () => {
  it('the account and the restore job name Azure-shaped blob URLs; the wire speaks Azure Storage (x-ms-version, ETag, 206, 416, XML errors)', async () => {
    const acct = await s.client.request<{ properties: { primaryEndpoints: { blob: string } } }>('GET', saId(), { query: ST });
    expect(acct.properties.primaryEndpoints.blob).toBe(endpoint());
    for (const k of ['OS Disk Blob Uri', 'Template Blob Uri', 'Config Blob Uri']) expect(bag[k], k).toMatch(new RegExp(`^${endpoint().replace(/\./g, '\\.')}${container}/`));
    expect(diskBytes.length).toBeGreaterThan(8 * MiB - 1);

    const url = `${await sasUrl(osBlob)}`;
    const head = await raw('HEAD', url, { 'x-ms-version': '2021-08-06' });
    expect(head.status).toBe(200);
    expect(head.headers).toMatchObject({ 'x-ms-version': '2021-08-06', 'content-length': String(diskBytes.length), 'x-ms-blob-type': 'BlockBlob', 'accept-ranges': 'bytes' });
    expect(head.headers.etag).toMatch(/^"0x[0-9A-F]+"$/);
    expect(Date.parse(String(head.headers['last-modified']))).toBeGreaterThan(0);
    const part = await raw('GET', url, { 'x-ms-range': 'bytes=4096-4119' });
    expect(part.status).toBe(206);
    expect(part.headers['content-range']).toBe(`bytes 4096-4119/${diskBytes.length}`);
    expect(part.body.equals(diskBytes.subarray(4096, 4120))).toBe(true);
    const std = await raw('GET', url, { range: `bytes=${diskBytes.length - 5}-` });
    expect([std.status, std.body.equals(diskBytes.subarray(diskBytes.length - 5))]).toEqual([206, true]);
    const bad = await raw('GET', url, { 'x-ms-range': `bytes=${diskBytes.length}-${diskBytes.length + 10}` });
    expect(bad.status).toBe(416);
    expect(bad.headers['x-ms-error-code']).toBe('InvalidRange');
    expect(bad.headers['content-range']).toBe(`bytes */${diskBytes.length}`);
    expect(bad.body.toString()).toMatch(/^<\?xml version="1.0" encoding="utf-8"\?><Error><Code>InvalidRange<\/Code><Message>/);
    expect((await raw('GET', url, { 'x-ms-range': 'bytes=9-3' })).status).toBe(416);
    expect((await raw('GET', url, { 'if-match': '"0xNOPE"' })).headers['x-ms-error-code']).toBe('ConditionNotMet');
    // anonymous, forged and expired: refused with Azure's codes; nothing leaks
    const anon = await raw('GET', `${endpoint()}${container}/${osBlob}`);
    expect([anon.status, anon.headers['x-ms-error-code']]).toEqual([401, 'NoAuthenticationInformation']);
    expect(String(anon.headers['www-authenticate'])).toMatch(/^Bearer authorization_uri=\S+ resource_id=https:\/\/storage\.azure\.com$/);
    const forged = await raw('GET', url.replace(/sig=[^&]+/, 'sig=AAAA'));
    expect([forged.status, forged.headers['x-ms-error-code']]).toEqual([403, 'AuthenticationFailed']);
    const expired = await raw('GET', url.replace(/se=[^&]+/, 'se=2001-01-01T00%3A00%3A00Z'));
    expect([expired.status, expired.headers['x-ms-error-code']]).toEqual([403, 'AuthenticationFailed']);
    // an ARM token is not a storage token
    const arm = await raw('GET', `${endpoint()}${container}/${osBlob}`, { authorization: `Bearer ${await s.client.token()}` });
    expect([arm.status, arm.headers['x-ms-error-code']]).toEqual([401, 'InvalidAuthenticationInfo']);
    // read-only plane
    const put = await raw('PUT', `${endpoint()}${container}/x`, { 'content-length': '0' });
    expect([put.status, put.headers['x-ms-error-code']]).toEqual([405, 'UnsupportedHttpVerb']);
    // the path-based URLs of older clients still work, with the new (Azure-format) SAS too
    const old = await get(s, `${s.origin}/blob/${SA}/${container}/${osBlob}?${url.split('?')[1]}`);
    expect([old.status, sha(old.body)]).toEqual([200, sha(diskBytes)]);
  });

  it('@azure/storage-blob: bearer token (storage.azure.com), Shared Key (listKeys) and SAS URLs list and download, ranged byte for byte', async () => {
    const offset = 4000;
    const count = 300;
    const args = {
      endpoint: endpoint(), tenantId: s.creds.tenantId, clientId: s.creds.clientId, clientSecret: s.creds.clientSecret, authority: s.origin,
      container, osBlob, templateBlob, size: diskBytes.length, offset, count, account: SA, accountKey,
      osSasUrl: await sasUrl(osBlob), templateSasUrl: await sasUrl(templateBlob),
    };
    const r = await run(process.execPath, [path.join(ROOT, 'test', 'clients', 'blob-js.mjs'), JSON.stringify(args)], { NODE_EXTRA_CA_CERTS: s.creds.caPath });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as Record<string, Record<string, unknown>>;
    const want = diskBytes.subarray(offset, offset + count).toString('hex');
    for (const mode of ['bearer', 'sharedKey']) {
      const m = out[mode]!;
      expect(m.containers, mode).toEqual([container]);
      expect(m.containerExists, mode).toBe(true);
      expect((m.blobs as { name: string; size: number; type: string }[]).find((b) => b.name === osBlob), mode).toMatchObject({ size: diskBytes.length, type: 'BlockBlob' });
      expect((m.pages as string[][]).length, mode).toBe((m.blobs as unknown[]).length);
      expect((m.pages as string[][]).flat(), mode).toEqual((m.blobs as { name: string }[]).map((b) => b.name));
      expect(m.prefixed, mode).toEqual([templateBlob]);
      expect(m.tree, mode).toEqual([{ kind: 'prefix', name: 'azuredeploy-' }]);
      expect(m.skuName, mode).toBe('Standard_LRS');
      expect(m.props, mode).toMatchObject({ contentLength: diskBytes.length, blobType: 'BlockBlob' });
      expect(m.diskSha, mode).toBe(sha(diskBytes));
      expect(m.range, mode).toEqual({ contentRange: `bytes ${offset}-${offset + count - 1}/${diskBytes.length}`, contentLength: count, hex: want });
      expect(m.template, mode).toBe(templateText);
      expect(m.badRange, mode).toEqual({ statusCode: 416, code: 'InvalidRange' });
      expect(m.missing, mode).toMatchObject({ statusCode: 404 });
    }
    expect(out.sas).toEqual({
      serverSha: sha(diskBytes), serverRange: { contentRange: `bytes ${offset}-${offset + count - 1}/${diskBytes.length}`, hex: want }, templateViaServerSas: templateText,
      sdkSha: sha(diskBytes), otherBlob: { statusCode: 403, code: 'AuthenticationFailed' }, anonymous: { statusCode: 401, code: 'NoAuthenticationInformation' },
    });
  }, 120_000);

  it('azure.storage.blob (Debian python3-azure): bearer token, Shared Key and SAS URLs list and download, ranged byte for byte', async () => {
    const offset = 5 * MiB + 17;
    const count = 1000;
    const args = {
      endpoint: endpoint(), clientId: s.creds.clientId, clientSecret: s.creds.clientSecret, authority: s.origin,
      container, osBlob, templateBlob, size: diskBytes.length, offset, count, account: SA, accountKey,
      osSasUrl: await sasUrl(osBlob), templateSasUrl: await sasUrl(templateBlob),
    };
    const r = await run('/usr/bin/python3', [path.join(ROOT, 'test', 'clients', 'blob_py.py'), JSON.stringify(args)], { REQUESTS_CA_BUNDLE: s.creds.caPath });
    expect(r.stderr).not.toMatch(/Traceback/);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as Record<string, Record<string, unknown>>;
    const want = diskBytes.subarray(offset, offset + count).toString('hex');
    for (const mode of ['bearer', 'sharedKey']) {
      const m = out[mode]!;
      expect(m.containers, mode).toEqual([container]);
      expect(m.containerExists, mode).toBe(true);
      expect((m.blobs as { name: string; size: number }[]).find((b) => b.name === osBlob), mode).toMatchObject({ size: diskBytes.length });
      expect((m.pages as string[][]).flat(), mode).toEqual((m.blobs as { name: string }[]).map((b) => b.name));
      expect((m.pages as string[][]).every((p) => p.length === 1), mode).toBe(true);
      expect(m.prefixed, mode).toEqual([templateBlob]);
      expect(m.props, mode).toMatchObject({ size: diskBytes.length, blobType: 'BlobType.BLOCKBLOB' });
      expect(m.diskSha, mode).toBe(sha(diskBytes));
      expect(m.range, mode).toEqual({ hex: want });
      expect(m.template, mode).toBe(templateText);
      expect(m.badRange, mode).toEqual({ statusCode: 416, code: 'InvalidRange' });
    }
    expect(out.sas).toEqual({ serverSha: sha(diskBytes), serverRange: { hex: want }, templateViaServerSas: templateText, sdkSha: sha(diskBytes) });
  }, 120_000);
});
