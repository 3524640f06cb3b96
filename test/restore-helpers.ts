/** Shared helpers of the restore suites: raw HTTPS downloads, qemu-img LUKS decryption, the CLI with a profile. */
import https from 'node:https';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { runCli, type TestServer } from './helpers/server.js';
import { BK_API, MiB, type Fixture, type Job } from './recovery-fixture.js';

export function get(s: TestServer, url: string, token?: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const r = https.request(url, { method: 'GET', ca: s.ca, headers: token ? { authorization: `Bearer ${token}` } : {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    r.on('error', reject);
    r.end();
  });
}

export function post(s: TestServer, url: string, body: Buffer, token: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const r = https.request(url, { method: 'POST', ca: s.ca, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream', 'content-length': body.length } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    r.on('error', reject);
    r.end(body);
  });
}

/** Decrypts a LUKS1 image with qemu-img (an independent implementation) and returns the plaintext. */
export function qemuDecrypt(image: string, passphrase: Buffer, dir: string): Buffer {
  const pass = path.join(dir, `pass-${path.basename(image)}.txt`);
  const out = path.join(dir, `plain-${path.basename(image)}.raw`);
  writeFileSync(pass, passphrase);
  const r = spawnSync('qemu-img', ['convert', '--object', `secret,id=sec0,file=${pass}`, '--image-opts', `driver=luks,key-secret=sec0,file.filename=${image}`, '-O', 'raw', out], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`qemu-img failed: ${r.stderr}`);
  return readFileSync(out);
}

export async function cli(env: Record<string, string>, ...args: string[]) {
  const r = await runCli(args, env);
  let json: unknown;
  try {
    json = r.stdout.trim() ? JSON.parse(r.stdout) : undefined;
  } catch {
    json = undefined;
  }
  return { ...r, json };
}

export async function expectErr(p: Promise<unknown>): Promise<{ status: number; code: string; message: string; recommendation?: string }> {
  const e = (await p.then(() => undefined, (x: unknown) => x)) as { status: number; code: string; message: string; recommendation?: string } | undefined;
  if (!e) throw new Error('expected an error');
  return e;
}

/**
 * The common start of the wire suites: an ADE-encrypted VM (KEK + BEK in `kv`) backed up once into recovery services
 * vault `rsv`, then RestoreDisks into the new storage account `sa`. Returns the restore job's property bag.
 */
export async function backupAndRestoreToStorage(f: Fixture, o: { kv: string; vm: string; rsv: string; sa: string; diskBytes?: number }): Promise<Record<string, string>> {
  const s = f.s;
  await f.group();
  await Promise.all([f.keyVault(o.kv), f.vm(o.vm, o.diskBytes ?? 8 * MiB)]);
  await f.encrypt(o.vm, o.kv);
  await f.grantBackup(o.kv);
  await f.createVault(o.rsv);
  await f.opStatus(await f.enable(o.rsv, o.vm));
  await f.guestWrite(o.vm, 4096, Buffer.from('MARKER-FOR-THE-WIRE-SUITES'));
  const st = await f.opStatus(await f.backup(o.rsv, o.vm));
  const job = await f.waitJob(o.rsv, st.properties!.jobId);
  if (job.properties.status !== 'Completed') throw new Error(`backup: ${JSON.stringify(job.properties)}`);
  const rpId = job.properties.extendedInfo.propertyBag['Recovery Point Id']!;
  const saId = `${f.rgPath()}/providers/Microsoft.Storage/storageAccounts/${o.sa}`;
  await s.client.request('PUT', saId, { query: { 'api-version': '2023-01-01' }, body: { location: 'local', sku: { name: 'Standard_LRS' }, kind: 'StorageV2' } });
  const res = await s.client.send('POST', `${f.itemPath(o.rsv, o.vm)}/recoveryPoints/${rpId}/restore`, { query: { 'api-version': BK_API }, body: { properties: { objectType: 'IaasVMRestoreRequest', recoveryPointId: rpId, sourceResourceId: f.vmId(o.vm), recoveryType: 'RestoreDisks', storageAccountId: saId, region: 'local' } } });
  if (res.status !== 202) throw new Error(`restore: ${res.status} ${JSON.stringify(res.body)}`);
  const rst: Job = await f.waitJob(o.rsv, (await f.opStatus(res)).properties!.jobId);
  if (rst.properties.status !== 'Completed') throw new Error(`restore job: ${JSON.stringify(rst.properties.errorDetails)}`);
  return rst.properties.extendedInfo.propertyBag;
}
