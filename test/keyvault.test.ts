/**
 * Key Vault acceptance (issue 3) with the official Azure SDKs, DEFAULT client options (challenge-resource verification
 * on), trusting only the installation CA (per-client `tlsOptions.ca`). One real server for the file.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import https from 'node:https';
import { randomBytes, randomUUID } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { ClientSecretCredential } from '@azure/identity';
import { CryptographyClient, KeyClient } from '@azure/keyvault-keys';
import { SecretClient } from '@azure/keyvault-secrets';
import { startTestServer, type TestServer } from './helpers/server.js';

const KV_API = '2023-07-01';
let s: TestServer;
let sub: string;
const RG = 'kv-rg';
const suffix = randomBytes(3).toString('hex');
const VAULT_A = `kva-${suffix}`;
const VAULT_B = `kvb-${suffix}`;

type Sp = { id: string; appId: string; passwordCredentials: { secretText: string }[] };
let app: Sp; // full data-plane rights
let backupSp: Sp; // "Azure Backup" template only

const vaultPath = (name: string) => `/subscriptions/${sub}/resourceGroups/${RG}/providers/Microsoft.KeyVault/vaults/${name}`;
const vaultUrl = (name: string) => `https://${name}.vault.localhost:${s.port}`;
const opts = () => ({ tlsOptions: { ca: s.ca } });
const credFor = (sp: Sp) => new ClientSecretCredential(s.creds.tenantId, sp.appId, sp.passwordCredentials[0]!.secretText, { authorityHost: s.origin, disableInstanceDiscovery: true, ...opts() });

async function createSp(name: string): Promise<Sp> {
  return s.client.request<Sp>('POST', '/v1.0/servicePrincipals', { body: { displayName: name } });
}

async function createVault(name: string, policies: unknown[]) {
  return s.client.request<{ properties: { vaultUri: string } }>('PUT', vaultPath(name), {
    query: { 'api-version': KV_API },
    body: { location: 'local', properties: { tenantId: s.creds.tenantId, sku: { family: 'A', name: 'standard' }, accessPolicies: policies, enabledForDiskEncryption: true } },
  });
}

/** Raw HTTPS to a vault host (no SDK), optionally with a token. */
function raw(method: string, url: string, o: { token?: string; body?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method, ca: s.ca, headers: { ...(o.token ? { authorization: `Bearer ${o.token}` } : {}), ...(o.body !== undefined ? { 'content-type': 'application/json' } : {}), ...(o.headers ?? {}) } }, (res) => {
      let b = '';
      res.on('data', (c: Buffer) => (b += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: b }));
    });
    req.on('error', reject);
    if (o.body !== undefined) req.write(o.body);
    req.end();
  });
}

beforeAll(async () => {
  s = await startTestServer();
  sub = s.creds.subscriptionId;
  await s.client.request('PUT', `/subscriptions/${sub}/resourcegroups/${RG}`, { query: { 'api-version': '2021-04-01' }, body: { location: 'local' } });
  app = await createSp('kv-app');
  backupSp = await createSp('kv-backup-reader');
  await createVault(VAULT_A, []);
  await createVault(VAULT_B, []);
  const templates = await s.client.request<{ value: { name: string; permissions: { keys: string[]; secrets: string[] } }[] }>('GET', '/providers/Microsoft.KeyVault/accessPolicyTemplates', { query: { 'api-version': KV_API } });
  const azureBackup = templates.value.find((t) => t.name === 'Azure Backup')!;
  for (const v of [VAULT_A, VAULT_B]) {
    await s.client.request('PUT', `${vaultPath(v)}/accessPolicies/add`, {
      query: { 'api-version': KV_API },
      body: { properties: { accessPolicies: [{ tenantId: s.creds.tenantId, objectId: app.id, permissions: { keys: ['all'], secrets: ['all'] } }] } },
    });
  }
  await s.client.request('PUT', `${vaultPath(VAULT_A)}/accessPolicies/add`, {
    query: { 'api-version': KV_API },
    body: { properties: { accessPolicies: [{ tenantId: s.creds.tenantId, objectId: backupSp.id, permissions: azureBackup.permissions }] } },
  });
}, 120_000);

afterAll(async () => {
  await s?.stop();
});

describe('Key Vault with the official SDKs (default options, CA only)', () => {
  it('no token → 401 with the challenge, before the body is read', async () => {
    const r = await raw('PUT', `${vaultUrl(VAULT_A)}/secrets/x?api%2Dversion=2025-07-01`, { body: '{not json' });
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toBe(`Bearer authorization="https://localhost:${s.port}/${s.creds.tenantId}", resource="https://vault.localhost:${s.port}"`);
    expect(JSON.parse(r.body).error.code).toBe('Unauthorized');
  });

  it('keys: create, wrap/unwrap (RSA-OAEP, RSA-OAEP-256), versions, backup, delete+purge, restore into the same and a second vault', async () => {
    const cred = credFor(app);
    const keysA = new KeyClient(vaultUrl(VAULT_A), cred, opts());
    const keysB = new KeyClient(vaultUrl(VAULT_B), cred, opts());
    const k1 = await keysA.createRsaKey('kek-vm1', { keySize: 2048 });
    expect(k1.id).toMatch(new RegExp(`^${vaultUrl(VAULT_A)}/keys/kek-vm1/[0-9a-f]{32}$`));
    expect(k1.keyOperations).toEqual(expect.arrayContaining(['wrapKey', 'unwrapKey']));
    const k2 = await keysA.createRsaKey('kek-vm1', { keySize: 3072, keyOps: ['wrapKey', 'unwrapKey', 'encrypt', 'decrypt'] });
    expect(k2.properties.version).not.toBe(k1.properties.version);

    const bek = randomBytes(64);
    const cc = new CryptographyClient(k2.id!, cred, opts());
    for (const alg of ['RSA-OAEP', 'RSA-OAEP-256'] as const) {
      const w = await cc.wrapKey(alg, bek);
      expect(w.result.length).toBe(384);
      const u = await cc.unwrapKey(alg, w.result);
      expect(Buffer.from(u.result).equals(bek)).toBe(true);
    }
    // Versionless client on k1 (older version): unwrap of k1 material, empty version segment = latest.
    const cc1 = new CryptographyClient(k1.id!, cred, opts());
    const w1 = await cc1.wrapKey('RSA-OAEP-256', bek);
    expect(Buffer.from((await cc1.unwrapKey('RSA-OAEP-256', w1.result)).result).equals(bek)).toBe(true);

    const versions: string[] = [];
    for await (const p of keysA.listPropertiesOfKeyVersions('kek-vm1')) versions.push(p.version!);
    expect(versions.sort()).toEqual([k1.properties.version, k2.properties.version].sort());

    const blob = await keysA.backupKey('kek-vm1');
    expect(blob!.length).toBeGreaterThan(100);
    const poller = await keysA.beginDeleteKey('kek-vm1');
    await poller.pollUntilDone();
    await keysA.purgeDeletedKey('kek-vm1');

    const rA = await keysA.restoreKeyBackup(blob!);
    const rB = await keysB.restoreKeyBackup(blob!);
    for (const [r, url] of [[rA, vaultUrl(VAULT_A)], [rB, vaultUrl(VAULT_B)]] as const) {
      expect(r.properties.version).toBe(k2.properties.version);
      expect(r.id).toBe(`${url}/keys/kek-vm1/${k2.properties.version}`);
      expect(r.key!.n).toEqual(k2.key!.n);
      const restoredVersions: string[] = [];
      for await (const p of new KeyClient(url, cred, opts()).listPropertiesOfKeyVersions('kek-vm1')) restoredVersions.push(p.version!);
      expect(restoredVersions.sort()).toEqual(versions.sort());
    }
    // The restored key in vault B unwraps what was wrapped before the backup.
    const ccB = new CryptographyClient(`${vaultUrl(VAULT_B)}/keys/kek-vm1/${k1.properties.version}`, cred, opts());
    expect(Buffer.from((await ccB.unwrapKey('RSA-OAEP-256', w1.result)).result).equals(bek)).toBe(true);
  });

  it('secrets: set with tags and content type "Wrapped BEK", versions, backup, delete+purge, restore into both vaults', async () => {
    const cred = credFor(app);
    const secA = new SecretClient(vaultUrl(VAULT_A), cred, opts());
    const secB = new SecretClient(vaultUrl(VAULT_B), cred, opts());
    const name = randomUUID();
    const tags = { DiskEncryptionKeyFileName: 'LinuxPassPhraseFileName', DiskEncryptionKeyEncryptionAlgorithm: 'RSA-OAEP', MachineName: 'vm1' };
    const v1 = await secA.setSecret(name, 'first-value', { contentType: 'Wrapped BEK', tags });
    const v2 = await secA.setSecret(name, 'c2VjcmV0LWJlaw', { contentType: 'Wrapped BEK', tags });
    expect(v2.properties.contentType).toBe('Wrapped BEK');
    expect(v2.properties.tags).toEqual(tags);
    expect(v2.properties.id).toBe(`${vaultUrl(VAULT_A)}/secrets/${name}/${v2.properties.version}`);
    expect((await secA.getSecret(name)).value).toBe('c2VjcmV0LWJlaw');
    expect((await secA.getSecret(name, { version: v1.properties.version! })).value).toBe('first-value');
    const versions: string[] = [];
    for await (const p of secA.listPropertiesOfSecretVersions(name)) versions.push(p.version!);
    expect(versions.sort()).toEqual([v1.properties.version!, v2.properties.version!].sort());

    const blob = await secA.backupSecret(name);
    await (await secA.beginDeleteSecret(name)).pollUntilDone();
    await secA.purgeDeletedSecret(name);
    await expect(secA.getSecret(name)).rejects.toMatchObject({ statusCode: 404, code: 'SecretNotFound' });

    for (const c of [secA, secB]) {
      const r = await c.restoreSecretBackup(blob!);
      expect(r.version).toBe(v2.properties.version);
      const latest = await c.getSecret(name);
      expect(latest.value).toBe('c2VjcmV0LWJlaw');
      expect(latest.properties.contentType).toBe('Wrapped BEK');
      expect(latest.properties.tags).toEqual(tags);
      expect((await c.getSecret(name, { version: v1.properties.version! })).value).toBe('first-value');
    }
  });

  it('a principal holding only the "Azure Backup" template can get/list/backup, and gets 403 Forbidden for unwrapKey, decrypt, secret set and delete', async () => {
    const admin = credFor(app);
    const keys = new KeyClient(vaultUrl(VAULT_A), admin, opts());
    const secrets = new SecretClient(vaultUrl(VAULT_A), admin, opts());
    const key = await keys.createRsaKey('kek-backup-test', { keySize: 2048 });
    await secrets.setSecret('bek-backup-test', 'value', { contentType: 'BEK' });

    const cred = credFor(backupSp);
    const bKeys = new KeyClient(vaultUrl(VAULT_A), cred, opts());
    const bSecrets = new SecretClient(vaultUrl(VAULT_A), cred, opts());
    expect((await bKeys.getKey('kek-backup-test')).id).toBe(key.id);
    const keyNames: string[] = [];
    for await (const p of bKeys.listPropertiesOfKeys()) keyNames.push(p.name);
    expect(keyNames).toContain('kek-backup-test');
    expect((await bKeys.backupKey('kek-backup-test'))!.length).toBeGreaterThan(0);
    expect((await bSecrets.getSecret('bek-backup-test')).value).toBe('value');
    const secretNames: string[] = [];
    for await (const p of bSecrets.listPropertiesOfSecrets()) secretNames.push(p.name);
    expect(secretNames).toContain('bek-backup-test');
    expect((await bSecrets.backupSecret('bek-backup-test'))!.length).toBeGreaterThan(0);

    const cc = new CryptographyClient(key, cred, opts()); // local wrap with the public key
    const wrapped = await cc.wrapKey('RSA-OAEP', randomBytes(32));
    const forbidden = async (p: Promise<unknown>, perm: string) => {
      const e = (await p.then(() => undefined, (x: unknown) => x)) as { statusCode?: number; code?: string; message?: string } | undefined;
      expect(e, perm).toBeDefined();
      expect(e!.statusCode).toBe(403);
      expect(e!.code).toBe('Forbidden');
      expect(e!.message).toContain(`oid=${backupSp.id}`);
      expect(e!.message).toContain(`does not have ${perm} permission on key vault '${VAULT_A};location=local'`);
    };
    await forbidden(cc.unwrapKey('RSA-OAEP', wrapped.result), 'keys unwrapKey');
    await forbidden(cc.decrypt({ algorithm: 'RSA-OAEP', ciphertext: wrapped.result }), 'keys decrypt');
    await forbidden(bSecrets.setSecret('bek-backup-test', 'overwrite'), 'secrets set');
    await forbidden(bSecrets.beginDeleteSecret('bek-backup-test').then((p) => p.pollUntilDone()), 'secrets delete');
    await forbidden(bKeys.beginDeleteKey('kek-backup-test').then((p) => p.pollUntilDone()), 'keys delete');
    // nothing was written
    expect((await secrets.getSecret('bek-backup-test')).value).toBe('value');
  });

  it('tampered backup blob → 400 BadParameter; soft-deleted name reuse → 409 ObjectIsDeletedButRecoverable', async () => {
    const cred = credFor(app);
    const secrets = new SecretClient(vaultUrl(VAULT_A), cred, opts());
    const keys = new KeyClient(vaultUrl(VAULT_A), cred, opts());
    await secrets.setSecret('tamper', 'v');
    const blob = (await secrets.backupSecret('tamper'))!;
    const bad = Uint8Array.from(blob);
    bad[bad.length - 5] = bad[bad.length - 5]! ^ 0x01;
    await expect(secrets.restoreSecretBackup(bad)).rejects.toMatchObject({ statusCode: 400, code: 'BadParameter' });
    await expect(keys.restoreKeyBackup(blob)).rejects.toMatchObject({ statusCode: 400, code: 'BadParameter' }); // secret blob is not a key blob
    await expect(secrets.restoreSecretBackup(Buffer.from('not a blob at all'))).rejects.toMatchObject({ statusCode: 400, message: expect.stringContaining('cannot decrypt backup blob') });

    await (await secrets.beginDeleteSecret('tamper')).pollUntilDone();
    const e = (await secrets.setSecret('tamper', 'again').catch((x: unknown) => x)) as { statusCode: number; code: string; message: string; details?: unknown };
    expect(e.statusCode).toBe(409);
    expect(e.code).toBe('Conflict');
    expect(e.message).toContain('deleted but recoverable');
    const r = await raw('POST', `${vaultUrl(VAULT_A)}/secrets/restore?api-version=7.4`, { token: await s.clientFor(app.appId, app.passwordCredentials[0]!.secretText).token(`https://vault.localhost:${s.port}`), body: JSON.stringify({ value: Buffer.from(blob).toString('base64url') }) });
    expect(r.status).toBe(409);
    expect(JSON.parse(r.body).error).toMatchObject({ code: 'Conflict', innererror: { code: 'ObjectIsDeletedButRecoverable' } });

    await keys.createRsaKey('kreuse');
    await (await keys.beginDeleteKey('kreuse')).pollUntilDone();
    await expect(keys.createRsaKey('kreuse')).rejects.toMatchObject({ statusCode: 409, code: 'Conflict' });
    await keys.beginRecoverDeletedKey('kreuse').then((p) => p.pollUntilDone());
    expect((await keys.getKey('kreuse')).name).toBe('kreuse');
  });

  it('the Debian python3-azure track-2 client sets and gets a secret (ADFS-style authority)', () => {
    const script = `
import sys
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient
port, client_id, secret, ca, vault = sys.argv[1:6]
cred = ClientSecretCredential(tenant_id='adfs', client_id=client_id, client_secret=secret, authority='https://localhost:' + port, disable_instance_discovery=True, connection_verify=ca)
c = SecretClient(vault_url='https://' + vault + '.vault.localhost:' + port, credential=cred, connection_verify=ca)
s = c.set_secret('py-secret', 'from-python', content_type='BEK', tags={'MachineName': 'py'})
g = c.get_secret('py-secret')
print(g.value, g.properties.content_type, g.properties.tags['MachineName'], g.properties.version == s.properties.version)
`;
    const r = spawnSync('/usr/bin/python3', ['-c', script, String(s.port), app.appId, app.passwordCredentials[0]!.secretText, s.creds.caPath, VAULT_A], {
      env: { ...process.env, REQUESTS_CA_BUNDLE: s.creds.caPath, PYTHONPATH: '' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.stderr).not.toMatch(/Traceback/);
    expect(r.stdout.trim()).toBe('from-python BEK py True');
  });
});
