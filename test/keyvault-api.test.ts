/**
 * Key Vault management plane, wire details of the data plane, bad input, authorization modes, audit, sealing at
 * rest and the CLI — against one real server (rsvault client, raw HTTPS and the rsvault CLI binary).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, createPublicKey, generateKeyPairSync, publicEncrypt, constants, createVerify, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { RsvaultClient } from '../src/client/index.js';
import { runCli, startTestServer, type TestServer } from './helpers/server.js';

const API = '2023-07-01';
const q = { 'api-version': API };
let s: TestServer;
let sub: string;
const RG = 'kvapi-rg';
const sfx = randomBytes(3).toString('hex');
const V = `kvapi-${sfx}`;
type Sp = { id: string; appId: string; passwordCredentials: { secretText: string }[] };
let app: Sp;
let other: Sp;
let appClient: RsvaultClient;
let otherClient: RsvaultClient;

const vpath = (name: string, rg = RG) => `/subscriptions/${sub}/resourceGroups/${rg}/providers/Microsoft.KeyVault/vaults/${name}`;
const vurl = (name: string) => `https://${name}.vault.localhost:${s.port}`;
const resource = () => `https://vault.localhost:${s.port}`;
const body = (policies: unknown[] = [], extra: Record<string, unknown> = {}) => ({ location: 'local', properties: { tenantId: s.creds.tenantId, sku: { family: 'A', name: 'standard' }, accessPolicies: policies, ...extra } });
const policy = (objectId: string, keys: string[], secrets: string[]) => ({ tenantId: s.creds.tenantId, objectId, permissions: { keys, secrets } });
/** Data-plane request as `c` (default: the app principal). */
const dp = <T = unknown>(method: string, p: string, o: { body?: unknown; api?: string; vault?: string; c?: RsvaultClient } = {}) =>
  (o.c ?? appClient).send<T>(method, p, { baseUrl: vurl(o.vault ?? V), resource: resource(), query: { 'api-version': o.api ?? '7.4' }, body: o.body });
const errOf = (r: { body: unknown }) => (r.body as { error: { code: string; message: string; innererror?: { code: string } } }).error;

beforeAll(async () => {
  s = await startTestServer();
  sub = s.creds.subscriptionId;
  await s.client.request('PUT', `/subscriptions/${sub}/resourcegroups/${RG}`, { query: { 'api-version': '2021-04-01' }, body: { location: 'local' } });
  app = await s.client.request<Sp>('POST', '/v1.0/servicePrincipals', { body: { displayName: 'kvapi-app' } });
  other = await s.client.request<Sp>('POST', '/v1.0/servicePrincipals', { body: { displayName: 'kvapi-other' } });
  appClient = s.clientFor(app.appId, app.passwordCredentials[0]!.secretText);
  otherClient = s.clientFor(other.appId, other.passwordCredentials[0]!.secretText);
  await s.client.request('PUT', vpath(V), { query: q, body: body([policy(app.id, ['all'], ['all'])], { enabledForDiskEncryption: true }) });
}, 120_000);

afterAll(async () => {
  appClient?.close();
  otherClient?.close();
  await s?.stop();
});

describe('management plane', () => {
  it('PUT/GET/PATCH/list; vaultUri uses the listening port; listed as a resource; names validated and globally unique', async () => {
    const v = await s.client.request<{ id: string; properties: Record<string, unknown> }>('GET', vpath(V), { query: q });
    expect(v.id).toBe(vpath(V));
    expect(v.properties).toMatchObject({ vaultUri: `https://${V}.vault.localhost:${s.port}/`, enabledForDiskEncryption: true, enableSoftDelete: true, softDeleteRetentionInDays: 90, enableRbacAuthorization: false, tenantId: s.creds.tenantId, sku: { family: 'A', name: 'standard' } });
    const patched = await s.client.request<{ tags: Record<string, string>; properties: { enabledForDeployment: boolean; accessPolicies: unknown[] } }>('PATCH', vpath(V), { query: q, body: { tags: { env: 'test' }, properties: { enabledForDeployment: true } } });
    expect(patched.tags).toEqual({ env: 'test' });
    expect(patched.properties.enabledForDeployment).toBe(true);
    expect(patched.properties.accessPolicies).toHaveLength(1);
    expect((await s.client.list<{ name: string }>(`/subscriptions/${sub}/resourceGroups/${RG}/providers/Microsoft.KeyVault/vaults`, { query: q })).map((x) => x.name)).toContain(V);
    expect((await s.client.list<{ name: string }>(`/subscriptions/${sub}/providers/Microsoft.KeyVault/vaults`, { query: q })).map((x) => x.name)).toContain(V);
    const res = await s.client.list<{ name: string; type: string }>(`/subscriptions/${sub}/resources`, { query: { 'api-version': '2021-04-01', $filter: "resourceType eq 'Microsoft.KeyVault/vaults'" } });
    expect(res.map((r) => r.name)).toContain(V);

    for (const bad of ['ab', 'a'.repeat(25), '1abc', 'ab--cd', 'abc-', 'a_bc']) {
      const r = await s.client.send('PUT', vpath(bad), { query: q, body: body() });
      expect(r.status, bad).toBe(400);
      expect(errOf(r).code).toBe('VaultNameNotValid');
    }
    await s.client.request('PUT', `/subscriptions/${sub}/resourcegroups/${RG}-2`, { query: { 'api-version': '2021-04-01' }, body: { location: 'local' } });
    const dup = await s.client.send('PUT', vpath(V.toUpperCase(), `${RG}-2`), { query: q, body: body() });
    expect(dup.status).toBe(409);
    expect(errOf(dup).code).toBe('VaultAlreadyExists');
    const avail = await s.client.request<{ nameAvailable: boolean }>('POST', `/subscriptions/${sub}/providers/Microsoft.KeyVault/checkNameAvailability`, { query: q, body: { name: V, type: 'Microsoft.KeyVault/vaults' } });
    expect(avail.nameAvailable).toBe(false);
  });

  it('bad input: malformed body, missing group/vault, unknown permission, missing RBAC permission → code + message, nothing written', async () => {
    const cases: [string, string, unknown, number, string][] = [
      ['PUT', vpath(`x${sfx}a`), { location: 'local', properties: { accessPolicies: 'nope' } }, 400, 'InvalidRequestContent'],
      ['PUT', vpath(`x${sfx}b`), body([{ tenantId: s.creds.tenantId, objectId: app.id, permissions: { keys: ['fly'] } }]), 400, 'BadRequest'],
      ['PUT', vpath(`x${sfx}c`), body([], { softDeleteRetentionInDays: 3 }), 400, 'InvalidRequestContent'],
      ['PUT', vpath(`x${sfx}d`, 'no-such-rg'), body(), 404, 'ResourceGroupNotFound'],
      ['GET', vpath(`x${sfx}e`), undefined, 404, 'ResourceNotFound'],
      ['PATCH', vpath(`x${sfx}f`), { tags: {} }, 404, 'ResourceNotFound'],
      ['PUT', `${vpath(V)}/accessPolicies/merge`, { properties: { accessPolicies: [] } }, 400, 'InvalidRequestContent'],
      ['PUT', `${vpath(V)}/accessPolicies/add`, { properties: {} }, 400, 'InvalidRequestContent'],
      ['PUT', vpath(V), body([], { enableSoftDelete: false }), 400, 'BadRequest'],
    ];
    for (const [m, p, b, status, code] of cases) {
      const r = await s.client.send(m, p, { query: q, body: b });
      expect(r.status, `${m} ${p}`).toBe(status);
      expect(errOf(r).code, `${m} ${p}`).toBe(code);
      expect(errOf(r).message.length).toBeGreaterThan(10);
    }
    const raw = await s.client.send('PUT', vpath(`x${sfx}g`), { query: q, headers: { 'content-type': 'application/json' }, body: undefined });
    expect(raw.status).toBe(400);
    // a principal without an ARM role cannot create or read vaults
    const denied = await otherClient.send('PUT', vpath(`x${sfx}h`), { query: q, body: body() });
    expect(denied.status).toBe(403);
    expect(errOf(denied).code).toBe('AuthorizationFailed');
    // nothing was written; the server is alive
    const list = await s.client.list<{ name: string }>(`/subscriptions/${sub}/providers/Microsoft.KeyVault/vaults`, { query: q });
    expect(list.filter((x) => x.name.startsWith(`x${sfx}`))).toEqual([]);
    const v = await s.client.request<{ properties: { accessPolicies: unknown[]; enableSoftDelete: boolean } }>('GET', vpath(V), { query: q });
    expect(v.properties.accessPolicies).toHaveLength(1);
    expect(v.properties.enableSoftDelete).toBe(true);
  });

  it('accessPolicies add/replace/remove, whole-vault PUT rewrites the list; templates are served', async () => {
    const base = `${vpath(V)}/accessPolicies`;
    const add = await s.client.request<{ type: string; properties: { accessPolicies: { objectId: string; permissions: { keys: string[]; secrets: string[] } }[] } }>('PUT', `${base}/add`, { query: q, body: { properties: { accessPolicies: [policy(other.id, ['Get'], ['list'])] } } });
    expect(add.type).toBe('Microsoft.KeyVault/vaults/accessPolicies');
    await s.client.request('PUT', `${base}/add`, { query: q, body: { properties: { accessPolicies: [policy(other.id, ['wrapkey'], [])] } } });
    let v = await s.client.request<{ properties: { accessPolicies: { objectId: string; permissions: { keys: string[]; secrets: string[] } }[] } }>('GET', vpath(V), { query: q });
    expect(v.properties.accessPolicies.find((p) => p.objectId === other.id)!.permissions).toMatchObject({ keys: ['get', 'wrapKey'], secrets: ['list'] });
    await s.client.request('PUT', `${base}/replace`, { query: q, body: { properties: { accessPolicies: [policy(other.id, ['list'], [])] } } });
    v = await s.client.request('GET', vpath(V), { query: q });
    expect(v.properties.accessPolicies.find((p) => p.objectId === other.id)!.permissions).toMatchObject({ keys: ['list'], secrets: [] });
    await s.client.request('PUT', `${base}/remove`, { query: q, body: { properties: { accessPolicies: [policy(other.id, ['list'], [])] } } });
    v = await s.client.request('GET', vpath(V), { query: q });
    expect(v.properties.accessPolicies.map((p) => p.objectId)).toEqual([app.id]);
    // whole-vault PUT (az keyvault set-policy) replaces the list
    await s.client.request('PUT', vpath(V), { query: q, body: body([policy(app.id, ['all'], ['all']), policy(other.id, ['get'], ['get'])], { enabledForDiskEncryption: true }) });
    v = await s.client.request('GET', vpath(V), { query: q });
    expect(v.properties.accessPolicies.map((p) => p.objectId).sort()).toEqual([app.id, other.id].sort());
    await s.client.request('PUT', vpath(V), { query: q, body: body([policy(app.id, ['all'], ['all'])], { enabledForDiskEncryption: true }) });

    const t = await s.client.request<{ value: { name: string; permissions: { keys: string[]; secrets: string[] } }[] }>('GET', '/providers/Microsoft.KeyVault/accessPolicyTemplates', { query: q });
    expect(t.value.find((x) => x.name === 'Azure Backup')!.permissions).toMatchObject({ keys: ['get', 'list', 'backup'], secrets: ['get', 'list', 'backup'] });
    expect(t.value.map((x) => x.name)).toEqual(expect.arrayContaining(['Key & Secret Management', 'Secret Management', 'Key Management']));
  });

  it('deleted vaults: delete → list-deleted → name reuse 409 → recover (objects kept) → delete → purge → name free', async () => {
    const name = `kvdel-${sfx}`;
    await s.client.request('PUT', vpath(name), { query: q, body: body([policy(app.id, ['all'], ['all'])]) });
    expect((await dp('PUT', '/secrets/keep', { vault: name, body: { value: 'kept' } })).status).toBe(200);
    expect((await s.client.send('DELETE', vpath(name), { query: q })).status).toBe(200);
    expect((await s.client.send('GET', vpath(name), { query: q })).status).toBe(404);
    const deleted = await s.client.list<{ name: string; properties: { vaultId: string; scheduledPurgeDate: string } }>(`/subscriptions/${sub}/providers/Microsoft.KeyVault/deletedVaults`, { query: q });
    expect(deleted.find((d) => d.name === name)!.properties.vaultId).toBe(vpath(name));
    const reuse = await s.client.send('PUT', vpath(name), { query: q, body: body() });
    expect(reuse.status).toBe(409);
    expect(errOf(reuse).code).toBe('ConflictError');
    const rec = await s.client.send('PUT', vpath(name), { query: q, body: { location: 'local', properties: { tenantId: s.creds.tenantId, sku: { name: 'standard' }, createMode: 'recover' } } });
    expect(rec.status).toBe(201);
    expect(((await dp<{ value: string }>('GET', '/secrets/keep', { vault: name })).body).value).toBe('kept');
    await s.client.request('DELETE', vpath(name), { query: q });
    const d = await s.client.request<{ properties: { location: string } }>('GET', `/subscriptions/${sub}/providers/Microsoft.KeyVault/locations/local/deletedVaults/${name}`, { query: q });
    expect(d.properties.location).toBe('local');
    expect((await s.client.send('POST', `/subscriptions/${sub}/providers/Microsoft.KeyVault/locations/local/deletedVaults/${name}/purge`, { query: q })).status).toBe(200);
    expect((await s.client.send('PUT', vpath(name), { query: q, body: body([policy(app.id, ['all'], ['all'])]) })).status).toBe(201);
    expect((await dp('GET', '/secrets/keep', { vault: name })).status).toBe(404);
  });
});

describe('data plane wire behaviour', () => {
  it('api-versions 7.0-7.6 and 2025-07-01 (api%2Dversion), ids echo the host, Unix-second timestamps, 32-hex versions', async () => {
    for (const api of ['7.0', '7.2', '7.4', '7.5', '7.6', '2025-07-01']) {
      const r = await dp<{ id: string; attributes: { created: number; updated: number; recoveryLevel: string; recoverableDays: number } }>('PUT', '/secrets/apiv', { api, body: { value: api } });
      expect(r.status, api).toBe(200);
      expect(r.body.id).toMatch(new RegExp(`^https://${V}\\.vault\\.localhost:${s.port}/secrets/apiv/[0-9a-f]{32}$`));
      expect(Number.isInteger(r.body.attributes.created)).toBe(true);
      expect(Math.abs(r.body.attributes.created - Date.now() / 1000)).toBeLessThan(60);
      expect(r.body.attributes).toMatchObject({ recoveryLevel: 'Recoverable+Purgeable', recoverableDays: 90 });
    }
    const enc = await appClient.send('GET', '/secrets/apiv?api%2Dversion=7.4', { baseUrl: vurl(V), resource: resource() });
    expect(enc.status).toBe(200);
    const missing = await appClient.send('GET', '/secrets/apiv', { baseUrl: vurl(V), resource: resource() });
    expect(missing.status).toBe(400);
    expect(errOf(missing).code).toBe('BadParameter');
    const unknown = await dp('GET', '/secrets/apiv', { api: 'banana' });
    expect(unknown.status).toBe(400);
  });

  it('maxresults ≤ 25 with nextLink; empty version segment = latest; case-insensitive paths', async () => {
    for (let i = 0; i < 7; i++) await dp('PUT', `/secrets/page-${i}`, { body: { value: String(i) } });
    const p1 = await dp<{ value: { id: string }[]; nextLink: string | null }>('GET', '/secrets?maxresults=3');
    expect(p1.body.value).toHaveLength(3);
    expect(p1.body.nextLink).toMatch(new RegExp(`^https://${V}\\.vault\\.localhost:${s.port}/secrets\\?`));
    const names: string[] = p1.body.value.map((x) => x.id);
    let next = p1.body.nextLink;
    while (next) {
      const u = new URL(next);
      const r = await appClient.request<{ value: { id: string }[]; nextLink: string | null }>('GET', u.pathname + u.search, { baseUrl: u.origin, resource: resource() });
      names.push(...r.value.map((x) => x.id));
      next = r.nextLink;
    }
    expect(names.filter((n) => /page-\d$/.test(n))).toHaveLength(7);
    expect(names.every((n) => !/\/[0-9a-f]{32}$/.test(n))).toBe(true);
    expect((await dp('GET', '/secrets?maxresults=26')).status).toBe(400);
    expect((await dp<{ value: string }>('GET', '/secrets/page-3/')).body.value).toBe('3');
    expect((await dp<{ value: string }>('GET', '/SECRETS/page-3')).body.value).toBe('3');
    const patched = await dp<{ contentType: string; value?: string }>('PATCH', '/secrets/page-3/', { body: { contentType: 'text/plain', tags: { a: 'b' } } });
    expect(patched.status).toBe(200);
    expect(patched.body.contentType).toBe('text/plain');
    expect(patched.body.value).toBeUndefined();
  });

  it('keys: exact JWK n/e, lenient base64 input, //wrapkey, RSA1_5 + encrypt/decrypt, RS256 sign/verify, import, update, key_ops enforced', async () => {
    const k = await dp<{ key: { kid: string; n: string; e: string; key_ops: string[]; kty: string } }>('POST', '/keys/wire/create', { body: { kty: 'RSA-HSM', key_size: 2048, attributes: { enabled: 'true' } } });
    expect(k.status).toBe(200);
    expect(k.body.key.kty).toBe('RSA-HSM');
    expect(k.body.key.e).toBe('AQAB');
    const n = Buffer.from(k.body.key.n, 'base64url');
    expect(n.length).toBe(256);
    expect(n[0]).not.toBe(0);
    const pub = createPublicKey({ key: { kty: 'RSA', n: k.body.key.n, e: k.body.key.e }, format: 'jwk' });
    const secret = randomBytes(48);
    // client-side OAEP (SHA-1) wrap, unwrap on the server via the empty-version path, value sent as *standard* base64
    const wrapped = publicEncrypt({ key: pub, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, secret);
    const u = await dp<{ kid: string; value: string }>('POST', '/keys/wire//unwrapkey', { body: { alg: 'RSA-OAEP', value: wrapped.toString('base64') } });
    expect(u.status).toBe(200);
    expect(u.body.kid).toBe(k.body.key.kid);
    expect(Buffer.from(u.body.value, 'base64url').equals(secret)).toBe(true);
    for (const alg of ['RSA1_5', 'RSA-OAEP', 'RSA-OAEP-256']) {
      const e = await dp<{ value: string }>('POST', '/keys/wire/encrypt', { body: { alg, value: secret.toString('base64url') } });
      const d = await dp<{ value: string }>('POST', `/keys/wire/${k.body.key.kid.split('/').pop()}/decrypt`, { body: { alg, value: e.body.value } });
      expect(Buffer.from(d.body.value, 'base64url').equals(secret), alg).toBe(true);
    }
    const digest = createHash('sha256').update('message').digest();
    const sig = await dp<{ value: string }>('POST', '/keys/wire/sign', { body: { alg: 'RS256', value: digest.toString('base64url') } });
    expect(createVerify('sha256').update('message').verify(pub, Buffer.from(sig.body.value, 'base64url'))).toBe(true);
    expect((await dp<{ value: boolean }>('POST', '/keys/wire/verify', { body: { alg: 'RS256', digest: digest.toString('base64url'), value: sig.body.value } })).body.value).toBe(true);

    // import a JWK (private parts), then use it
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwk = privateKey.export({ format: 'jwk' });
    const imp = await dp<{ key: { n: string; kid: string } }>('PUT', '/keys/imported', { body: { key: { ...jwk, kty: 'RSA', key_ops: ['wrapKey', 'unwrapKey'] } } });
    expect(imp.status).toBe(200);
    expect(imp.body.key.n).toBe(jwk.n);
    // update: restrict key_ops → unwrap refused
    const upd = await dp<{ key: { key_ops: string[] } }>('PATCH', '/keys/imported/', { body: { key_ops: ['wrapKey'], tags: { t: '1' } } });
    expect(upd.body.key.key_ops).toEqual(['wrapKey']);
    const refused = await dp('POST', '/keys/imported/unwrapkey', { body: { alg: 'RSA-OAEP', value: wrapped.toString('base64url') } });
    expect(refused.status).toBe(403);

    const badCases: [string, string, unknown, number, string][] = [
      ['POST', '/keys/bad1/create', { kty: 'EC' }, 400, 'BadParameter'],
      ['POST', '/keys/bad2/create', { kty: 'RSA', key_size: 1024 }, 400, 'BadParameter'],
      ['POST', '/keys/bad_name/create', { kty: 'RSA' }, 400, 'BadParameter'],
      ['POST', '/keys/wire/unwrapkey', { alg: 'RSA-OAEP', value: '!!!' }, 400, 'BadParameter'],
      ['POST', '/keys/wire/unwrapkey', { alg: 'A256KW', value: 'AAAA' }, 400, 'BadParameter'],
      ['POST', '/keys/wire/unwrapkey', { alg: 'RSA-OAEP', value: 'AAAA' }, 400, 'BadParameter'],
      ['POST', '/keys/wire/unwrapkey', undefined, 400, 'BadParameter'],
      ['GET', '/keys/nokey', undefined, 404, 'KeyNotFound'],
      ['GET', `/keys/wire/${'0'.repeat(32)}`, undefined, 404, 'KeyNotFound'],
      ['PUT', '/secrets/nov', { contentType: 'x' }, 400, 'BadParameter'],
      ['PUT', '/secrets/nov', { value: 5 }, 400, 'BadParameter'],
      ['GET', '/secrets/nosecret', undefined, 404, 'SecretNotFound'],
      ['POST', '/secrets/restore', { value: 'AAAA' }, 400, 'BadParameter'],
      ['DELETE', '/deletedsecrets/nosecret', undefined, 404, 'SecretNotFound'],
    ];
    for (const [m, p, b, status, code] of badCases) {
      const r = await dp(m, p, { body: b });
      expect(r.status, `${m} ${p}`).toBe(status);
      expect(errOf(r).code, `${m} ${p}`).toBe(code);
    }
    // malformed JSON → Key Vault envelope
    const mal = await appClient.send('PUT', '/secrets/mal', { baseUrl: vurl(V), resource: resource(), query: { 'api-version': '7.4' }, headers: { 'content-type': 'application/json' }, body: undefined });
    expect(mal.status).toBe(400);
    expect((await dp('GET', '/secrets/nov')).status).toBe(404); // nothing written
    // unknown vault host
    const nov = await dp('GET', '/secrets/x', { vault: `nope-${sfx}` });
    expect(nov.status).toBe(404);
    expect(errOf(nov).code).toBe('VaultNotFound');
  });

  it('a wrong-audience token gets the 401 challenge; a principal without a policy gets 403 naming it', async () => {
    const armToken = await appClient.token();
    const r = await appClient.send('GET', '/secrets/x', { baseUrl: vurl(V), anonymous: true, headers: { authorization: `Bearer ${armToken}` }, query: { 'api-version': '7.4' } });
    expect(r.status).toBe(401);
    expect(String(r.headers['www-authenticate'])).toContain(`resource="https://vault.localhost:${s.port}"`);
    const f = await dp('GET', '/secrets/apiv', { c: otherClient });
    expect(f.status).toBe(403);
    expect(errOf(f)).toMatchObject({ code: 'Forbidden', innererror: { code: 'AccessDenied' } });
    expect(errOf(f).message).toContain(`appid=${other.appId};oid=${other.id};iss=https://localhost:${s.port}/${s.creds.tenantId}/`);
    expect(errOf(f).message).toContain(`does not have secrets get permission on key vault '${V};location=local'`);
  });

  it('RBAC mode: access policies ignored; Key Vault Secrets User may read but not write', async () => {
    const name = `kvrbac-${sfx}`;
    await s.client.request('PUT', vpath(name), { query: q, body: body([policy(other.id, ['all'], ['all'])], { enableRbacAuthorization: true }) });
    const denied = await dp('PUT', '/secrets/r', { vault: name, c: otherClient, body: { value: 'x' } });
    expect(denied.status).toBe(403);
    expect(errOf(denied).innererror?.code).toBe('ForbiddenByRbac');
    expect(errOf(denied).message).toContain("Action: 'Microsoft.KeyVault/vaults/secrets/setSecret/action'");
    const assign = async (principalId: string, role: string) => {
      const defs = await s.client.request<{ value: { id: string }[] }>('GET', `/subscriptions/${sub}/providers/Microsoft.Authorization/roleDefinitions`, { query: { 'api-version': '2022-04-01', $filter: `roleName eq '${role}'` } });
      await s.client.request('PUT', `${vpath(name)}/providers/Microsoft.Authorization/roleAssignments/${randomUUID()}`, { query: { 'api-version': '2022-04-01' }, body: { properties: { roleDefinitionId: defs.value[0]!.id, principalId } } });
    };
    await assign(app.id, 'Key Vault Administrator');
    await assign(other.id, 'Key Vault Secrets User');
    expect((await dp('PUT', '/secrets/r', { vault: name, body: { value: 'rbac' } })).status).toBe(200);
    expect((await dp<{ value: string }>('GET', '/secrets/r', { vault: name, c: otherClient })).body.value).toBe('rbac');
    expect((await dp('PUT', '/secrets/r', { vault: name, c: otherClient, body: { value: 'no' } })).status).toBe(403);
    expect((await dp('DELETE', '/secrets/r', { vault: name, c: otherClient })).status).toBe(403);
  });

  it('audit log is queryable over ARM and never holds values; values are sealed at rest', async () => {
    const marker = `plaintext-marker-${sfx}`;
    await dp('PUT', '/secrets/audited', { body: { value: marker } });
    await dp('GET', '/secrets/audited');
    await dp('GET', '/secrets/audited', { c: otherClient });
    const ev = await s.client.request<{ value: { operationName: string; callerObjectId: string; object: string; httpStatusCode: number; resultType: string }[] }>('GET', `${vpath(V)}/auditEvents`, { query: { ...q, $top: '50' } });
    const mine = ev.value.filter((e) => e.object?.startsWith('secrets/audited'));
    expect(mine.map((e) => e.operationName)).toEqual(['SecretGet', 'SecretGet', 'SecretSet']);
    expect(mine[0]).toMatchObject({ callerObjectId: other.id, httpStatusCode: 403, resultType: 'Forbidden' });
    expect(mine[2]).toMatchObject({ callerObjectId: app.id, httpStatusCode: 200, resultType: 'Success' });
    expect(JSON.stringify(ev)).not.toContain(marker);
    // nothing in the data dir (database, WAL, logs) holds the value in clear
    const files = readdirSync(s.dataDir, { recursive: true }) as string[];
    for (const f of files) {
      const p = path.join(s.dataDir, f);
      try {
        expect(readFileSync(p).includes(Buffer.from(marker)), f).toBe(false);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EISDIR') throw e;
      }
    }
    expect(s.output()).not.toContain(marker);
  });
});

describe('CLI: rsvault keyvault', () => {
  it('create, set-policy --template "Azure Backup", key/secret commands, backup/restore, delete/recover/purge, list-deleted', async () => {
    const env = { RSVAULT_CONFIG_DIR: mkdtempSync(path.join(os.tmpdir(), 'rsvault-cli-kv-')) };
    const cli = async (...args: string[]) => {
      const r = await runCli(args, env);
      if (r.code !== 0) throw new Error(`rsvault ${args.join(' ')} → ${r.code}: ${r.stderr}`);
      return r.stdout.trim() ? (JSON.parse(r.stdout) as Record<string, unknown> & { properties?: Record<string, unknown> }) : undefined;
    };
    await cli('login', '--server', s.origin, '--service-principal', '-u', s.creds.clientId, '-p', s.creds.clientSecret, '-t', s.creds.tenantId, '--ca-file', s.creds.caPath);
    const name = `kvcli-${sfx}`;
    const created = await cli('keyvault', 'create', '-n', name, '-g', RG, '--enabled-for-disk-encryption');
    expect(created!.properties!.enabledForDiskEncryption).toBe(true);
    expect((created!.properties!.accessPolicies as { objectId: string }[])[0]!.objectId).toBe(s.creds.objectId);
    const pol = await cli('keyvault', 'set-policy', '-n', name, '--spn', other.appId, '--template', 'Azure Backup');
    const entry = (pol!.properties!.accessPolicies as { objectId: string; permissions: { keys: string[]; secrets: string[] } }[]).find((p) => p.objectId === other.id)!;
    expect(entry.permissions).toMatchObject({ keys: ['get', 'list', 'backup'], secrets: ['get', 'list', 'backup'] });
    const pol2 = await cli('keyvault', 'set-policy', '-n', name, '--object-id', app.id, '--key-permissions', 'get', 'list', '--secret-permissions', 'get');
    expect((pol2!.properties!.accessPolicies as unknown[]).length).toBe(3);
    expect((await cli('keyvault', 'delete-policy', '-n', name, '--object-id', app.id))!.properties!.accessPolicies as unknown[]).toHaveLength(2);
    expect(((await cli('keyvault', 'show', '-n', name))!.properties!.accessPolicies as unknown[]).length).toBe(2);
    const listed = (await cli('keyvault', 'list', '-g', RG)) as unknown as { name: string }[];
    expect(listed.map((v) => v.name)).toContain(name);

    const key = (await cli('keyvault', 'key', 'create', '--vault-name', name, '-n', 'kek1')) as unknown as { key: { kid: string } };
    expect(key.key.kid).toMatch(new RegExp(`^https://${name}\\.vault\\.localhost:${s.port}/keys/kek1/[0-9a-f]{32}$`));
    const sec = (await cli('keyvault', 'secret', 'set', '--vault-name', name, '-n', 'bek1', '--value', 'c2VjcmV0', '--content-type', 'Wrapped BEK', '--tags', 'MachineName=vm1')) as unknown as { id: string };
    expect(((await cli('keyvault', 'secret', 'show', '--vault-name', name, '-n', 'bek1')) as unknown as { value: string }).value).toBe('c2VjcmV0');
    expect(((await cli('keyvault', 'key', 'list', '--vault-name', name)) as unknown as unknown[]).length).toBe(1);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'kvcli-'));
    await cli('keyvault', 'secret', 'backup', '--vault-name', name, '-n', 'bek1', '-f', path.join(dir, 'bek1.blob'));
    await cli('keyvault', 'key', 'backup', '--vault-name', name, '-n', 'kek1', '-f', path.join(dir, 'kek1.blob'));
    await cli('keyvault', 'secret', 'delete', '--vault-name', name, '-n', 'bek1');
    expect(((await cli('keyvault', 'secret', 'list', '--vault-name', name, '--deleted')) as unknown as unknown[]).length).toBe(1);
    await cli('keyvault', 'secret', 'purge', '--vault-name', name, '-n', 'bek1');
    const restored = (await cli('keyvault', 'secret', 'restore', '--vault-name', name, '-f', path.join(dir, 'bek1.blob'))) as unknown as { id: string };
    expect(restored.id).toBe(sec.id);
    await cli('keyvault', 'key', 'delete', '--vault-name', name, '-n', 'kek1');
    await cli('keyvault', 'key', 'recover', '--vault-name', name, '-n', 'kek1');
    const again = await runCli(['keyvault', 'key', 'restore', '--vault-name', name, '-f', path.join(dir, 'kek1.blob')], env);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^ERROR: \(Conflict\)/);

    await cli('keyvault', 'delete', '-n', name);
    expect(((await cli('keyvault', 'list-deleted')) as unknown as { name: string }[]).map((d) => d.name)).toContain(name);
    await cli('keyvault', 'recover', '-n', name);
    expect(((await cli('keyvault', 'secret', 'show', '--vault-name', name, '-n', 'bek1')) as unknown as { value: string }).value).toBe('c2VjcmV0');
    await cli('keyvault', 'delete', '-n', name);
    await cli('keyvault', 'purge', '-n', name);
    expect(((await cli('keyvault', 'list-deleted')) as unknown as { name: string }[]).map((d) => d.name)).not.toContain(name);
    const tpl = await runCli(['keyvault', 'set-policy', '-n', V, '--object-id', other.id, '--template', 'Nope'], env);
    expect(tpl.code).toBe(1);
    expect(tpl.stderr).toContain('TemplateNotFound');
  });
});
