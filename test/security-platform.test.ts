/**
 * Platform hardening against the real server binary (issue 12, items 3, 4, 7, 8):
 * - disk imports pin the checked file: a symlink swapped in after the check (the window held open by a test-mode
 *   hook), a symlinked final component or parent directory never import a file outside the import directories;
 * - a burst of bad client secrets gets 429 + Retry-After in Azure AD's shape, and the locked-out client id is refused
 *   even with its right secret;
 * - RSA1_5 decrypt/unwrap answers malformed padding like valid padding (200, same shape: implicit rejection);
 * - tokens without `exp` or of another tenant are 401; SAS range requests with inverted or huge ranges are 416 with
 *   `Content-Range: bytes * /size`; over-long names, unknown api-versions and non-JSON ARM bodies get ARM errors;
 * - the installation CA carries critical nameConstraints (openssl), node and Python (az's stack) still accept the
 *   server, a certificate it signs for another name is rejected; data-dir files are 0600 and dirs 0700 after a backup;
 * - test-only knobs are refused without RSVAULT_TEST_MODE=1.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import https from 'node:https';
import { execFileSync, spawnSync } from 'node:child_process';
import { constants, publicEncrypt, createPublicKey, randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SignJWT, type CryptoKey } from 'jose';
import { createPrivateKey } from 'node:crypto';
import { generate } from 'selfsigned';
import { startTestServer, runCli, type TestServer } from './helpers/server.js';
import { Fixture, MiB } from './recovery-fixture.js';
import { Sealer } from '../src/platform/crypto.js';
import { isPostgresUrl } from '../src/platform/db/index.js';

const DELAY_MS = 1500;
const FAIL_LIMIT = 5;
const C_API = { 'api-version': '2022-08-01' };
const RG_API = { 'api-version': '2021-04-01' };
const KV_API = { 'api-version': '2023-07-01' };
const suffix = randomBytes(3).toString('hex');
const RG = `rg-secp-${suffix}`;

let s: TestServer;
let f: Fixture;
let tmp: string;

type Raw = { status: number; headers: Record<string, string | string[] | undefined>; body: Buffer; json?: unknown };
function raw(method: string, url: string, o: { headers?: Record<string, string>; body?: string | Buffer } = {}): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method, ca: s.ca, headers: o.headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        let json: unknown;
        try {
          json = JSON.parse(body.toString('utf8'));
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json });
      });
    });
    req.on('error', reject);
    if (o.body !== undefined) req.write(o.body);
    req.end();
  });
}
const armToken = () => s.client.token();
const errCode = (r: Raw) => (r.json as { error?: { code?: string } } | undefined)?.error?.code;
const diskPath = (n: string) => `/subscriptions/${s.creds.subscriptionId}/resourceGroups/${RG}/providers/Microsoft.Compute/disks/${n}`;

beforeAll(async () => {
  s = await startTestServer({ env: { RSVAULT_LUKS_ITERATIONS: '1000', RSVAULT_TEST_IMPORT_CHECK_DELAY_MS: String(DELAY_MS), RSVAULT_TOKEN_FAILURE_LIMIT: String(FAIL_LIMIT) } });
  tmp = mkdtempSync(path.join(os.tmpdir(), 'rsv-secp-'));
  f = new Fixture(s, RG);
  await f.group();
}, 120_000);

afterAll(async () => {
  await s?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  if (f) rmSync(f.tmp, { recursive: true, force: true });
});

describe('disk imports pin the checked file (item 3)', () => {
  const GOOD = Buffer.alloc(64 * 1024, 0x47); // 'G'
  const SECRET = Buffer.alloc(64 * 1024, 0x53); // 'S'

  /** A file the caller may not import: inside the server's data directory. */
  function secretFile(name: string): string {
    const dir = path.join(s.dataDir, `secret-${name}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'image.raw'), SECRET);
    return dir;
  }

  /** PUT an import and, once the server logged that it checked the path, run `swap` while it pauses. */
  async function importWithSwap(name: string, src: string, swap: () => void, inPlace = false): Promise<Raw> {
    const marker = `"src":"${src}"`;
    const before = s.output().split(marker).length;
    const token = await armToken();
    const put = raw('PUT', `${s.origin}${diskPath(name)}?api-version=2022-08-01`, {
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ location: 'local', properties: { creationData: { createOption: 'Import', sourceUri: src, ...(inPlace ? { referenceInPlace: true } : {}) } } }),
    });
    for (let i = 0; s.output().split(marker).length === before; i++) {
      if (i > 400) throw new Error(`the server never logged the import check:\n${s.output().slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    swap();
    return put;
  }

  const imageOf = (r: Raw) => readFileSync((r.json as { properties: { rsvault: { imagePath: string } } }).properties.rsvault.imagePath);

  it('a symlink swapped in after the check does not change what is copied', async () => {
    const dir = mkdtempSync(path.join(tmp, 'swap-'));
    const src = path.join(dir, 'image.raw');
    writeFileSync(src, GOOD);
    const secret = path.join(secretFile('copy'), 'image.raw');
    const r = await importWithSwap('swapcopy', src, () => {
      rmSync(src);
      symlinkSync(secret, src);
    });
    expect(r.status, r.body.toString()).toBe(202); // a disk PUT answers 202 + Azure-AsyncOperation, as Azure
    expect(imageOf(r).equals(GOOD)).toBe(true);
  });

  it('a parent directory swapped for a symlink after the check does not change what is copied', async () => {
    const dir = mkdtempSync(path.join(tmp, 'swapdir-'));
    mkdirSync(path.join(dir, 'sub'));
    const src = path.join(dir, 'sub', 'image.raw');
    writeFileSync(src, GOOD);
    const secretDir = secretFile('dir');
    const r = await importWithSwap('swapdir', src, () => {
      renameSync(path.join(dir, 'sub'), path.join(dir, 'sub.orig'));
      symlinkSync(secretDir, path.join(dir, 'sub'));
    });
    expect(r.status, r.body.toString()).toBe(202);
    expect(imageOf(r).equals(GOOD)).toBe(true);
  });

  it('referenceInPlace: a swap after the check is refused; an unswapped image is a hard link to the checked inode', async () => {
    const dir = mkdtempSync(path.join(tmp, 'swapref-'));
    const src = path.join(dir, 'image.raw');
    writeFileSync(src, GOOD);
    const secret = path.join(secretFile('ref'), 'image.raw');
    const r = await importWithSwap('swapref', src, () => {
      rmSync(src);
      symlinkSync(secret, src);
    }, true);
    expect(r.status, r.body.toString()).toBe(403);
    expect(errCode(r)).toBe('ImportPathNotAllowed');
    const disk = await s.client.send('GET', diskPath('swapref'), { query: C_API });
    expect(disk.status).toBe(404);

    const src2 = path.join(dir, 'image2.raw');
    writeFileSync(src2, GOOD);
    const ok = await importWithSwap('inplace', src2, () => undefined, true);
    expect(ok.status, ok.body.toString()).toBe(202);
    const img = (ok.json as { properties: { rsvault: { imagePath: string; referencedInPlace: boolean } } }).properties.rsvault;
    expect(img.referencedInPlace).toBe(true);
    expect(statSync(img.imagePath).ino).toBe(statSync(src2).ino);
    // Swapping the source path afterwards changes nothing the disk reads.
    rmSync(src2);
    symlinkSync(secret, src2);
    expect(readFileSync(img.imagePath).equals(GOOD)).toBe(true);
  });

  it('a symlink as the final component or in a parent directory is refused (links are not followed)', async () => {
    const dir = mkdtempSync(path.join(tmp, 'links-'));
    mkdirSync(path.join(dir, 'real'));
    writeFileSync(path.join(dir, 'real', 'image.raw'), GOOD);
    symlinkSync(path.join(dir, 'real', 'image.raw'), path.join(dir, 'link.raw'));
    symlinkSync(path.join(dir, 'real'), path.join(dir, 'linkdir'));
    for (const [name, src] of [['linkfile', path.join(dir, 'link.raw')], ['linkparent', path.join(dir, 'linkdir', 'image.raw')]] as const) {
      const r = await s.client.send('PUT', diskPath(name), { query: C_API, body: { location: 'local', properties: { creationData: { createOption: 'Import', sourceUri: src } } } });
      expect(r.status, name).toBe(403);
      expect((r.body as { error: { code: string; message: string } }).error).toMatchObject({ code: 'ImportPathNotAllowed', message: expect.stringMatching(/symbolic link/) });
    }
  });
});

describe('token endpoint throttling (item 4)', () => {
  it('a burst of bad client secrets gets 429 with Retry-After in AAD shape; the locked-out client is refused even with its secret', async () => {
    const sp = await s.client.request<{ appId: string; passwordCredentials: { secretText: string }[] }>('POST', '/v1.0/servicePrincipals', { body: { displayName: `burst-${suffix}` } });
    const form = (secret: string) => new URLSearchParams({ grant_type: 'client_credentials', client_id: sp.appId, client_secret: secret, scope: 'https://management.azure.com/.default' }).toString();
    const post = (secret: string) => raw('POST', `${s.origin}/${s.creds.tenantId}/oauth2/v2.0/token`, { headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form(secret) });
    const statuses: number[] = [];
    let last: Raw | undefined;
    for (let i = 0; i < FAIL_LIMIT + 3; i++) {
      last = await post(`wrong-${i}`);
      statuses.push(last.status);
    }
    expect(statuses.slice(0, FAIL_LIMIT)).toEqual(Array(FAIL_LIMIT).fill(401));
    expect(statuses.slice(FAIL_LIMIT)).toEqual([429, 429, 429]);
    expect(Number(last!.headers['retry-after'])).toBeGreaterThan(0);
    expect(last!.json).toMatchObject({ error: 'temporarily_unavailable', error_codes: [50053] });
    expect((last!.json as { error_description: string }).error_description).toMatch(/^AADSTS50053: Too many failed sign-in attempts/);
    const right = await post(sp.passwordCredentials[0]!.secretText);
    expect(right.status).toBe(429);
    // Other clients from the same address still sign in.
    expect((await s.client.send('GET', '/subscriptions', { query: { 'api-version': '2019-11-01' } })).status).toBe(200);
  });
});

describe('Key Vault RSA1_5 is no padding oracle (item 7)', () => {
  it('malformed padding answers like valid padding: 200 and the same shape, deterministic per ciphertext', async () => {
    const kv = `kvsecp${suffix}`;
    await f.keyVault(kv, false);
    const key = await f.kv<{ key: { kid: string; n: string; e: string } }>(kv, 'POST', '/keys/k15/create', { kty: 'RSA', key_size: 2048 });
    const pub = createPublicKey({ key: { kty: 'RSA', n: key.key.n, e: key.key.e }, format: 'jwk' });
    const rawEnc = (block: Buffer) => publicEncrypt({ key: pub, padding: constants.RSA_NO_PADDING }, block).toString('base64url');
    const send = (op: 'decrypt' | 'unwrapkey', value: string) =>
      s.client.send<{ kid: string; value: string }>('POST', `/keys/k15/${op}`, { baseUrl: `https://${kv}.vault.localhost:${s.port}`, resource: 'https://vault.localhost', query: { 'api-version': '7.4' }, body: { alg: 'RSA1_5', value } });

    const secret = randomBytes(32);
    const enc = await f.kv<{ value: string }>(kv, 'POST', '/keys/k15/encrypt', { alg: 'RSA1_5', value: secret.toString('base64url') });
    const good = await send('decrypt', enc.value);
    expect(good.status).toBe(200);
    expect(Buffer.from(good.body.value, 'base64url')).toEqual(secret);

    const bad = [
      Buffer.concat([Buffer.from([0, 1]), Buffer.alloc(254, 0xff)]), // wrong block type
      Buffer.concat([Buffer.from([0, 2]), Buffer.alloc(254, 0x5a)]), // no separator
      Buffer.concat([Buffer.from([0, 2, 9, 9, 0]), randomBytes(251)]), // padding too short
    ];
    for (const block of bad) {
      const c = rawEnc(block);
      for (const op of ['decrypt', 'unwrapkey'] as const) {
        const r = await send(op, c);
        expect(r.status, op).toBe(good.status);
        expect(Object.keys(r.body).sort()).toEqual(Object.keys(good.body).sort());
        expect(r.body.kid).toBe(good.body.kid);
        expect((await send(op, c)).body.value).toBe(r.body.value);
      }
    }
  });
});

describe('tokens, ranges, names, api-versions, media types (item 7)', () => {
  async function forged(claims: Record<string, unknown>, exp: boolean): Promise<string> {
    const master = Buffer.from(readFileSync(path.join(s.dataDir, 'master.key'), 'utf8').trim(), 'base64');
    const id = Sealer.keyIdOf(master);
    const pem = new Sealer(id, { [id]: master }).openText(readFileSync(path.join(s.dataDir, 'token-signing.sealed'), 'utf8').trim(), 'token-signing-key');
    const kid = (JSON.parse(Buffer.from((await armToken()).split('.')[0]!, 'base64url').toString()) as { kid: string }).kid;
    const now = Math.floor(Date.now() / 1000);
    let jwt = new SignJWT({ oid: s.creds.objectId, sub: s.creds.objectId, appid: s.creds.clientId, idtyp: 'app', ver: '1.0', ...claims })
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid })
      .setIssuer(`https://localhost:${s.port}/${String(claims.tid)}/`)
      .setAudience('https://management.azure.com/')
      .setIssuedAt(now)
      .setNotBefore(now - 60);
    if (exp) jwt = jwt.setExpirationTime(now + 600);
    return jwt.sign(createPrivateKey(pem) as unknown as CryptoKey);
  }

  it('a correctly signed token without exp, or of another tenant, is 401', async () => {
    const url = `${s.origin}/subscriptions/${s.creds.subscriptionId}/resourcegroups?api-version=2021-04-01`;
    const control = await raw('GET', url, { headers: { authorization: `Bearer ${await forged({ tid: s.creds.tenantId }, true)}` } });
    expect(control.status).toBe(200);
    const noExp = await raw('GET', url, { headers: { authorization: `Bearer ${await forged({ tid: s.creds.tenantId }, false)}` } });
    expect(noExp.status).toBe(401);
    expect(errCode(noExp)).toBe('InvalidAuthenticationToken');
    const foreign = await raw('GET', url, { headers: { authorization: `Bearer ${await forged({ tid: randomUUID() }, true)}` } });
    expect(foreign.status).toBe(401);
  });

  it('disk SAS downloads: inverted or huge ranges are 416 with Content-Range bytes */size, valid ones 206', async () => {
    await s.client.request('PUT', diskPath('ranged'), { query: C_API, body: { location: 'local', properties: { creationData: { createOption: 'Empty' }, diskSizeGB: 1 } } });
    const g = await s.client.request<{ accessSAS: string }>('POST', `${diskPath('ranged')}/beginGetAccess`, { query: C_API, body: { access: 'Read', durationInSeconds: 600 } });
    const size = 1024 ** 3;
    for (const [header, value] of [['range', 'bytes=100-50'], ['x-ms-range', 'bytes=4096-0'], ['range', 'bytes=0-99999999999999999999'], ['x-ms-range', `bytes=${size}-`]] as const) {
      const r = await raw('GET', g.accessSAS, { headers: { [header]: value } });
      expect(r.status, value).toBe(416);
      expect(r.headers['content-range']).toBe(`bytes */${size}`);
      expect(errCode(r)).toBe('InvalidRange');
    }
    const ok = await raw('GET', g.accessSAS, { headers: { 'x-ms-range': 'bytes=512-1023' } });
    expect(ok.status).toBe(206);
    expect(ok.body.length).toBe(512);
    expect(ok.headers['content-range']).toBe(`bytes 512-1023/${size}`);
  });

  it('names over the limit get Azure codes in the ARM envelope, also beyond the router limit', async () => {
    const sub = `/subscriptions/${s.creds.subscriptionId}`;
    const long = (n: number) => 'a'.repeat(n);
    const cases: [string, Record<string, string>, unknown, string][] = [
      [`${sub}/resourcegroups/${long(91)}`, RG_API, { location: 'local' }, 'InvalidResourceName'],
      [`${sub}/resourcegroups/${long(2000)}`, RG_API, { location: 'local' }, 'InvalidResourceName'],
      [`${sub}/resourceGroups/${RG}/providers/Microsoft.Compute/disks/${long(1500)}`, C_API, { location: 'local' }, 'InvalidResourceName'],
      [`${sub}/resourceGroups/${RG}/providers/Microsoft.KeyVault/vaults/${long(25)}`, KV_API, { location: 'local', properties: { tenantId: s.creds.tenantId, sku: { family: 'A', name: 'standard' }, accessPolicies: [] } }, 'VaultNameNotValid'],
      [`${sub}/resourceGroups/${RG}/providers/Microsoft.Storage/storageAccounts/${long(25)}`, { 'api-version': '2023-01-01' }, { location: 'local' }, 'AccountNameInvalid'],
      [`${sub}/resourceGroups/${RG}/providers/Microsoft.RecoveryServices/vaults/${long(51)}`, { 'api-version': '2023-04-01' }, { location: 'local', sku: { name: 'Standard' }, properties: {} }, 'InvalidResourceName'],
    ];
    for (const [p, q, body, code] of cases) {
      const r = await s.client.send('PUT', p, { query: q, body });
      expect(r.status, p.slice(-40)).toBe(400);
      expect((r.body as { error: { code: string; message: string } }).error, p.slice(-40)).toMatchObject({ code, message: expect.any(String) });
    }
  });

  it('unknown api-versions are 400 InvalidApiVersionParameter listing the supported ones', async () => {
    const sub = `/subscriptions/${s.creds.subscriptionId}`;
    for (const [p, v] of [[`${sub}/resourcegroups`, '2099-01-01'], [`${sub}/resourcegroups`, '2021-02-30'], [`${sub}/providers/Microsoft.KeyVault/vaults`, '1999-01-01'], [`${sub}/providers/Microsoft.Compute/disks`, '2030-01-01']] as const) {
      const r = await s.client.send('GET', p, { query: { 'api-version': v } });
      expect(r.status, v).toBe(400);
      expect((r.body as { error: { code: string; message: string } }).error).toMatchObject({ code: 'InvalidApiVersionParameter', message: expect.stringMatching(/The supported versions are '\d{4}-\d{2}-\d{2}/) });
    }
    expect((await s.client.send('GET', `${sub}/resourcegroups`, { query: { 'api-version': '2022-09-01' } })).status).toBe(200);
  });

  it('form, text and octet-stream bodies on ARM writes are 415 UnsupportedMediaType in the ARM envelope; nothing is created', async () => {
    const token = await armToken();
    const url = `${s.origin}/subscriptions/${s.creds.subscriptionId}/resourcegroups/rg-media-${suffix}?api-version=2021-04-01`;
    for (const [type, body] of [['application/x-www-form-urlencoded', 'location=local'], ['text/plain', '{"location":"local"}'], ['application/octet-stream', 'location'], ['application/xml', '<location/>']] as const) {
      const r = await raw('PUT', url, { headers: { authorization: `Bearer ${token}`, 'content-type': type }, body });
      expect(r.status, type).toBe(415);
      expect(errCode(r), type).toBe('UnsupportedMediaType');
    }
    expect((await raw('GET', url, { headers: { authorization: `Bearer ${token}` } })).status).toBe(404);
  });
});

describe('installation CA and data-dir modes (item 8)', () => {
  it('the CA has critical nameConstraints; node and Python accept the server; a certificate for another name is rejected', async () => {
    const text = execFileSync('openssl', ['x509', '-in', s.creds.caPath, '-noout', '-text'], { encoding: 'utf8' });
    expect(text).toMatch(/X509v3 Name Constraints: critical\s+Permitted:\s+DNS:localhost\s+DNS:\.localhost\s+IP:127\.0\.0\.0\/255\.0\.0\.0\s+IP:0:0:0:0:0:0:0:1\/FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF/);
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    const verify = (cert: string) => spawnSync('openssl', ['verify', '-CAfile', s.creds.caPath, cert], { encoding: 'utf8' });
    expect(verify(path.join(s.dataDir, 'tls', 'server.pem')).status).toBe(0);

    // node https (this suite's client) and Python requests (what az uses) accept the server on both names.
    expect((await raw('GET', `${s.origin}/healthz`)).status).toBe(200);
    const py = spawnSync('/usr/bin/python3', ['-c', `import requests,sys; [sys.stdout.write(str(requests.get(u, verify=sys.argv[1]).status_code)+' ') for u in sys.argv[2:]]`, s.creds.caPath, `${s.origin}/healthz`, `https://127.0.0.1:${s.port}/healthz`], { encoding: 'utf8' });
    expect(py.stdout.trim(), py.stderr).toBe('200 200');

    // The CA key signs a certificate for a name outside the constraints: verifiers refuse it.
    const evil = await generate([{ name: 'commonName', value: 'login.example.com' }], {
      keySize: 2048,
      algorithm: 'sha256',
      ca: { key: readFileSync(path.join(s.dataDir, 'tls', 'ca.key'), 'utf8'), cert: readFileSync(s.creds.caPath, 'utf8') },
      extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: 'login.example.com' }] }],
    });
    const evilPath = path.join(tmp, 'evil.pem');
    writeFileSync(evilPath, evil.cert);
    const v = verify(evilPath);
    expect(v.status).not.toBe(0);
    expect(v.stdout + v.stderr).toMatch(/permitted subtree violation/);
  });

  it('after a backup, the database (+wal/shm), keys, credentials and vault stores are owner-only (files 0600, dirs 0700)', async () => {
    await f.vm('vmmode', 2 * MiB);
    await f.createVault('rsvmode');
    await f.opStatus(await f.enable('rsvmode', 'vmmode'));
    const st = await f.opStatus(await f.backup('rsvmode', 'vmmode'));
    expect((await f.waitJob('rsvmode', st.properties!.jobId)).properties.status).toBe('Completed');

    const mode = (p: string) => statSync(p).mode & 0o777;
    const d = s.dataDir;
    expect(mode(d)).toBe(0o700);
    // On PostgreSQL (RSVAULT_TEST_DB=postgres) the metadata lives in the database server: no SQLite file at all.
    const dbFiles = isPostgresUrl(s.dbUrl) ? [] : ['rsvault.db', 'rsvault.db-wal', 'rsvault.db-shm'];
    if (isPostgresUrl(s.dbUrl)) expect(existsSync(path.join(d, 'rsvault.db'))).toBe(false);
    for (const file of [...dbFiles, 'master.key', 'credentials.json', 'token-signing.sealed', 'tls/ca.key', 'tls/server.key']) {
      expect(mode(path.join(d, file)), file).toBe(0o600);
    }
    let files = 0;
    const walk = (dir: string) => {
      expect(mode(dir), dir).toBe(0o700);
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else {
          files++;
          expect(mode(p), p).toBe(0o600);
        }
      }
    };
    walk(path.join(d, 'vaults'));
    expect(files).toBeGreaterThan(0);
  }, 120_000);
});

describe('test-only knobs need RSVAULT_TEST_MODE=1 (item 7)', () => {
  it('refuses RSVAULT_LUKS_ITERATIONS / RSVAULT_CLOCK_OFFSET_MS without test mode, and LUKS iterations below 1000', async () => {
    const dir = mkdtempSync(path.join(tmp, 'knobs-'));
    const base = { RSVAULT_TEST_MODE: '', RSVAULT_LUKS_ITERATIONS: '', RSVAULT_CLOCK_OFFSET_MS: '' };
    const a = await runCli(['serve', '--data-dir', dir, '--port', '0'], { ...base, RSVAULT_LUKS_ITERATIONS: '1000' });
    expect(a.code).toBe(2);
    expect(a.stderr).toMatch(/RSVAULT_LUKS_ITERATIONS is a test-only setting/);
    const b = await runCli(['serve', '--data-dir', dir, '--port', '0'], { ...base, RSVAULT_CLOCK_OFFSET_MS: '86400000' });
    expect(b.code).toBe(2);
    expect(b.stderr).toMatch(/RSVAULT_CLOCK_OFFSET_MS is a test-only setting/);
    const c = await runCli(['serve', '--data-dir', dir, '--port', '0'], { ...base, RSVAULT_TEST_MODE: '1', RSVAULT_LUKS_ITERATIONS: '10' });
    expect(c.code).toBe(2);
    expect(c.stderr).toMatch(/at least 1000/);
  });
});
