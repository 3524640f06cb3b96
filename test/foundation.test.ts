/**
 * Foundation acceptance: the real binary over real TLS, the official @azure/identity client, the CLI, plain HTTPS.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import https from 'node:https';
import { mkdtempSync, statSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { ClientSecretCredential } from '@azure/identity';
import { startTestServer, runCli, BIN, ROOT, type TestServer } from './helpers/server.js';

let s: TestServer;

interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  json: unknown;
  text: string;
}

function req(method: string, url: string, o: { token?: string; body?: string; contentType?: string; ca?: Buffer } = {}): Promise<Res> {
  return new Promise((resolve, reject) => {
    const r = https.request(url, { method, ca: o.ca ?? s.ca, headers: { ...(o.token ? { authorization: `Bearer ${o.token}` } : {}), ...(o.body !== undefined ? { 'content-type': o.contentType ?? 'application/json', 'content-length': Buffer.byteLength(o.body) } : {}) } }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => {
        let json: unknown;
        try {
          json = text ? JSON.parse(text) : undefined;
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, json, text });
      });
    });
    r.on('error', reject);
    if (o.body !== undefined) r.write(o.body);
    r.end();
  });
}

const errCode = (r: Res) => (r.json as { error?: { code?: string } }).error?.code;

beforeAll(async () => {
  s = await startTestServer();
});
afterAll(async () => {
  await s?.stop();
});

describe('serve', () => {
  it('answers /healthz over TLS trusted with the installation CA only', async () => {
    const r = await req('GET', `https://localhost:${s.port}/healthz`);
    expect(r.status).toBe(200);
    // Which roles this process runs and whether its database and queue answer (readiness per role).
    expect(r.json).toMatchObject({ status: 'ok', roles: ['api', 'worker', 'scheduler'], db: { dialect: process.env.RSVAULT_TEST_DB === 'postgres' ? 'postgres' : 'sqlite', ok: true }, queue: { ok: true, working: true } });
    // Also on the IPv4 and IPv6 loopback addresses (the certificate names both).
    expect((await req('GET', `https://127.0.0.1:${s.port}/healthz`)).status).toBe(200);
    expect((await req('GET', `https://[::1]:${s.port}/healthz`)).status).toBe(200);
    // Without the CA the certificate is not trusted.
    await expect(
      new Promise((resolve, reject) => https.get(`https://localhost:${s.port}/healthz`, { ca: [] as unknown as Buffer }, resolve).on('error', reject)),
    ).rejects.toThrow(/certificate/i);
  });

  it('writes credentials.json and the master key with mode 0600', () => {
    expect(statSync(path.join(s.dataDir, 'credentials.json')).mode & 0o777).toBe(0o600);
    expect(statSync(path.join(s.dataDir, 'master.key')).mode & 0o777).toBe(0o600);
    expect(s.creds.tenantId).toMatch(/^[0-9a-f-]{36}$/);
    expect(s.creds.subscriptionId).toMatch(/^[0-9a-f-]{36}$/);
    expect(s.creds.caPath).toBe(path.join(s.dataDir, 'tls', 'ca.pem'));
  });

  it('serves Prometheus metrics', async () => {
    await req('GET', `${s.origin}/healthz`);
    const r = await req('GET', `${s.origin}/metrics`);
    expect(r.status).toBe(200);
    expect(r.text).toMatch(/rsvault_http_requests_total\{method="GET",route="\/healthz",status="200"\} \d+/);
  });
});

describe('tokens', () => {
  const cred = (secret: string) =>
    new ClientSecretCredential(s.creds.tenantId, s.creds.clientId, secret, {
      authorityHost: s.origin,
      disableInstanceDiscovery: true,
      additionalPolicies: [],
      tlsOptions: { ca: s.ca.toString() },
    } as ConstructorParameters<typeof ClientSecretCredential>[3]);

  it('@azure/identity ClientSecretCredential obtains an ARM token that the API accepts', async () => {
    const t = await cred(s.creds.clientSecret).getToken('https://management.azure.com/.default');
    expect(t.token.split('.')).toHaveLength(3);
    const claims = JSON.parse(Buffer.from(t.token.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
    expect(claims).toMatchObject({ tid: s.creds.tenantId, appid: s.creds.clientId, oid: s.creds.objectId, aud: 'https://management.azure.com' });
    const r = await req('GET', `${s.origin}/subscriptions?api-version=2022-12-01`, { token: t.token });
    expect(r.status).toBe(200);
    expect((r.json as { value: { subscriptionId: string }[] }).value[0]!.subscriptionId).toBe(s.creds.subscriptionId);
  });

  it('a wrong secret fails with invalid_client', async () => {
    await expect(cred('not-the-secret').getToken('https://management.azure.com/.default')).rejects.toThrow(/invalid_client/);
    const r = await req('POST', `${s.origin}/${s.creds.tenantId}/oauth2/v2.0/token`, {
      contentType: 'application/x-www-form-urlencoded',
      body: new URLSearchParams({ grant_type: 'client_credentials', client_id: s.creds.clientId, client_secret: 'wrong', scope: 'https://management.azure.com/.default' }).toString(),
    });
    expect(r.status).toBe(401);
    expect(r.json).toMatchObject({ error: 'invalid_client', error_codes: [7000215] });
    expect((r.json as { error_description: string }).error_description).toMatch(/^AADSTS7000215: Invalid client secret/);
  });

  it('ADFS-style endpoints serve the az CLI login flow, ignoring claims and client_info', async () => {
    const oidc = await req('GET', `${s.origin}/adfs/.well-known/openid-configuration`);
    expect(oidc.status).toBe(200);
    expect(oidc.json).toMatchObject({ token_endpoint: `${s.origin}/adfs/oauth2/token`, authorization_endpoint: `${s.origin}/adfs/oauth2/authorize` });
    const r = await req('POST', `${s.origin}/adfs/oauth2/token`, {
      contentType: 'application/x-www-form-urlencoded',
      body: new URLSearchParams({
        client_id: s.creds.clientId,
        grant_type: 'client_credentials',
        client_info: '1',
        client_secret: s.creds.clientSecret,
        claims: '{"access_token": {"xms_cc": {"values": ["CP1"]}}}',
        scope: 'https://management.core.windows.net//.default',
      }).toString(),
    });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ token_type: 'Bearer', expires_in: 3600 });
    const sub = await req('GET', `${s.origin}/subscriptions/${s.creds.subscriptionId}?api-version=2019-11-01`, { token: (r.json as { access_token: string }).access_token });
    expect(sub.status).toBe(200);
    // Cloud autodetect, including the `//metadata` form az sends.
    const meta = await req('GET', `${s.origin}//metadata/endpoints?api-version=2015-01-01`);
    expect(meta.status).toBe(200);
    expect(meta.json).toMatchObject({ authentication: { loginEndpoint: `${s.origin}/adfs` } });
  });

  it('checks the audience per plane', async () => {
    const vaultToken = await cred(s.creds.clientSecret).getToken(`https://vault.localhost:${s.port}/.default`);
    const r = await req('GET', `${s.origin}/subscriptions?api-version=2022-12-01`, { token: vaultToken.token });
    expect(r.status).toBe(401);
    expect(errCode(r)).toBe('InvalidAuthenticationToken');
    // a storage token (blob plane) is not an ARM token either
    const storageToken = await cred(s.creds.clientSecret).getToken('https://storage.azure.com/.default');
    expect((await req('GET', `${s.origin}/subscriptions?api-version=2022-12-01`, { token: storageToken.token })).status).toBe(401);
    const unknown = await req('POST', `${s.origin}/${s.creds.tenantId}/oauth2/v2.0/token`, {
      contentType: 'application/x-www-form-urlencoded',
      body: new URLSearchParams({ grant_type: 'client_credentials', client_id: s.creds.clientId, client_secret: s.creds.clientSecret, scope: 'https://database.windows.net/.default' }).toString(),
    });
    expect(unknown.status).toBe(400);
    expect(unknown.json).toMatchObject({ error: 'invalid_resource' });
  });
});

describe('ARM authorization', () => {
  it('an ARM call without a token gets the 401 envelope', async () => {
    const r = await req('GET', `${s.origin}/subscriptions/${s.creds.subscriptionId}/resourcegroups?api-version=2021-04-01`);
    expect(r.status).toBe(401);
    expect(errCode(r)).toBe('InvalidAuthenticationToken');
    const tampered = await req('GET', `${s.origin}/subscriptions?api-version=2021-04-01`, { token: (await s.client.token()).slice(0, -4) + 'AAAA' });
    expect(tampered.status).toBe(401);
  });

  it("a Reader principal's PUT gets 403 AuthorizationFailed; its GET works", async () => {
    const sp = await s.client.request<{ id: string; appId: string; passwordCredentials: { secretText: string }[] }>('POST', '/v1.0/servicePrincipals', { body: { displayName: 'reader-sp' } });
    await s.client.request('PUT', `/subscriptions/${s.creds.subscriptionId}/providers/Microsoft.Authorization/roleAssignments/${crypto.randomUUID()}`, {
      query: { 'api-version': '2022-04-01' },
      body: { properties: { roleDefinitionId: `/subscriptions/${s.creds.subscriptionId}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7`, principalId: sp.id } },
    });
    await s.client.request('PUT', `/subscriptions/${s.creds.subscriptionId}/resourcegroups/readable`, { query: { 'api-version': '2021-04-01' }, body: { location: 'local' } });
    const reader = s.clientFor(sp.appId, sp.passwordCredentials[0]!.secretText);
    const put = await reader.send('PUT', `/subscriptions/${s.creds.subscriptionId}/resourcegroups/forbidden`, { query: { 'api-version': '2021-04-01' }, body: { location: 'local' } });
    expect(put.status).toBe(403);
    expect(put.body).toMatchObject({ error: { code: 'AuthorizationFailed' } });
    expect((put.body as { error: { message: string } }).error.message).toContain("'Microsoft.Resources/subscriptions/resourceGroups/write'");
    const get = await reader.send('GET', `/subscriptions/${s.creds.subscriptionId}/resourcegroups/readable`, { query: { 'api-version': '2021-04-01' } });
    expect(get.status).toBe(200);
    // Nothing was written by the refused PUT.
    expect((await s.client.send('GET', `/subscriptions/${s.creds.subscriptionId}/resourcegroups/forbidden`, { query: { 'api-version': '2021-04-01' } })).status).toBe(404);
    // A principal with no role at all sees no subscriptions.
    const nobody = await s.client.request<{ appId: string; passwordCredentials: { secretText: string }[] }>('POST', '/v1.0/servicePrincipals', { body: { displayName: 'nobody-sp' } });
    const nb = s.clientFor(nobody.appId, nobody.passwordCredentials[0]!.secretText);
    expect(await nb.list('/subscriptions', { query: { 'api-version': '2019-11-01' } })).toEqual([]);
    reader.close();
    nb.close();
  });
});

describe('resource groups over plain HTTPS', () => {
  it('create, get (any case, percent-encoded), list, update tags, delete', async () => {
    const token = await s.client.token();
    const base = `${s.origin}/subscriptions/${s.creds.subscriptionId}`;
    const put = await req('PUT', `${base}/resourcegroups/rg-http?api-version=2021-04-01`, { token, body: JSON.stringify({ location: 'local', tags: { env: 'test' } }) });
    expect(put.status).toBe(201);
    expect(put.json).toEqual({ id: `/subscriptions/${s.creds.subscriptionId}/resourceGroups/rg-http`, name: 'rg-http', type: 'Microsoft.Resources/resourceGroups', location: 'local', tags: { env: 'test' }, properties: { provisioningState: 'Succeeded' } });
    expect((await req('PUT', `${base}/resourcegroups/rg-http?api-version=2021-04-01`, { token, body: JSON.stringify({ location: 'local' }) })).status).toBe(200);
    const get = await req('GET', `${base}/resourceGroups/RG%2Dhttp?api-version=2021-04-01`, { token });
    expect(get.status).toBe(200);
    const list = await req('GET', `${base}/resourcegroups?api-version=2021-04-01`, { token });
    expect((list.json as { value: { name: string }[] }).value.map((g) => g.name)).toContain('rg-http');
    const moved = await req('PUT', `${base}/resourcegroups/rg-http?api-version=2021-04-01`, { token, body: JSON.stringify({ location: 'westeurope' }) });
    expect(moved.status).toBe(409);
    expect(errCode(moved)).toBe('InvalidResourceGroupLocation');
    const del = await req('DELETE', `${base}/resourcegroups/rg-http?api-version=2021-04-01`, { token });
    expect(del.status).toBe(202);
    const loc = String(del.headers.location);
    expect(loc).toMatch(/\/operationresults\//);
    let status = 202;
    for (let i = 0; i < 50 && status === 202; i++) {
      status = (await req('GET', loc, { token })).status;
      if (status === 202) await new Promise((r) => setTimeout(r, 100));
    }
    expect(status).toBe(204);
    const gone = await req('GET', `${base}/resourcegroups/rg-http?api-version=2021-04-01`, { token });
    expect(gone.status).toBe(404);
    expect(errCode(gone)).toBe('ResourceGroupNotFound');
  });
});

describe('bad input', () => {
  it('malformed JSON, wrong types, unknown members and missing api-version get 400 with a code and path; the server stays up', async () => {
    const token = await s.client.token();
    const url = `${s.origin}/subscriptions/${s.creds.subscriptionId}/resourcegroups/rg-bad?api-version=2021-04-01`;
    const malformed = await req('PUT', url, { token, body: '{"location": "local",' });
    expect(malformed.status).toBe(400);
    expect(errCode(malformed)).toBe('InvalidRequestContent');

    const wrongType = await req('PUT', url, { token, body: JSON.stringify({ location: 42 }) });
    expect(wrongType.status).toBe(400);
    expect(wrongType.json).toMatchObject({ error: { code: 'InvalidRequestContent', target: '$.location' } });

    const nested = await req('PUT', url, { token, body: JSON.stringify({ location: 'local', tags: { a: 1 } }) });
    expect(nested.status).toBe(400);
    expect((nested.json as { error: { target: string } }).error.target).toBe('$.tags.a');

    const missing = await req('PUT', url, { token, body: JSON.stringify({ tags: {} }) });
    expect(missing.status).toBe(400);
    expect((missing.json as { error: { target: string; message: string } }).error).toMatchObject({ target: '$.location' });

    const extra = await req('PUT', url, { token, body: JSON.stringify({ location: 'local', bogus: true }) });
    expect(extra.status).toBe(400);
    expect((extra.json as { error: { target: string } }).error.target).toBe('$.bogus');

    const noVersion = await req('GET', url.replace(/\?.*$/, ''), { token });
    expect(noVersion.status).toBe(400);
    expect(errCode(noVersion)).toBe('MissingApiVersionParameter');

    const badVersion = await req('GET', url.replace('2021-04-01', 'yesterday'), { token });
    expect(badVersion.status).toBe(400);
    expect(errCode(badVersion)).toBe('InvalidApiVersionParameter');

    const badName = await req('PUT', url.replace('rg-bad', 'bad.'), { token, body: JSON.stringify({ location: 'local' }) });
    expect(badName.status).toBe(400);
    expect(errCode(badName)).toBe('InvalidResourceName');

    const unknownPath = await req('GET', `${s.origin}/subscriptions/${s.creds.subscriptionId}/providers/Nope/things?api-version=2021-04-01`, { token });
    expect(unknownPath.status).toBe(404);
    expect(errCode(unknownPath)).toBe('InvalidResourceType');

    const otherSub = await req('GET', `${s.origin}/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups?api-version=2021-04-01`, { token });
    expect(otherSub.status).toBe(403); // no role there: Azure answers AuthorizationFailed before it says NotFound

    // Nothing was created, and the process is alive.
    expect((await req('GET', url, { token })).status).toBe(404);
    expect((await req('GET', `${s.origin}/healthz`)).status).toBe(200);
    expect(s.proc.exitCode).toBeNull();
  });
});

describe('Graph-lite', () => {
  it('finds the Backup Management Service by display name, prefix and app id; /me is 400 for apps', async () => {
    const byName = await s.client.request<{ value: { appId: string; id: string }[] }>('GET', '/v1.0/servicePrincipals', { query: { $filter: "displayName eq 'Backup Management Service'" } });
    expect(byName.value).toHaveLength(1);
    expect(byName.value[0]!.appId).toBe('262044b1-e2ce-469f-a196-69ab7ada62d3');
    const byPrefix = await s.client.request<{ value: { appId: string }[] }>('GET', '/v1.0/servicePrincipals', { query: { $filter: "startswith(displayName,'Backup Man')" } });
    expect(byPrefix.value.map((p) => p.appId)).toContain('262044b1-e2ce-469f-a196-69ab7ada62d3');
    const bySpn = await s.client.request<{ value: { id: string }[] }>('GET', '/v1.0/servicePrincipals', { query: { $filter: "servicePrincipalNames/any(c:c eq '262044b1-e2ce-469f-a196-69ab7ada62d3')" } });
    expect(bySpn.value[0]!.id).toBe(byName.value[0]!.id);
    const me = await s.client.send('GET', '/v1.0/me');
    expect(me.status).toBe(400);
    const bad = await s.client.send('GET', '/v1.0/servicePrincipals', { query: { $filter: 'nonsense' } });
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ error: { code: 'Request_UnsupportedQuery' } });
  });

  it('a user signs in with a password and /me returns the user', async () => {
    await s.client.request('POST', '/v1.0/users', { body: { displayName: 'Ops', userPrincipalName: 'ops@rsvault.localhost', passwordProfile: { password: 'correct horse battery' } } });
    const { RsvaultClient } = await import('../src/client/index.js');
    const u = new RsvaultClient({ server: s.origin, ca: s.ca, credentials: { tenantId: s.creds.tenantId, username: 'ops@rsvault.localhost', password: 'correct horse battery' } });
    const me = await u.request<{ userPrincipalName: string }>('GET', '/v1.0/me');
    expect(me.userPrincipalName).toBe('ops@rsvault.localhost');
    const wrong = new RsvaultClient({ server: s.origin, ca: s.ca, credentials: { tenantId: s.creds.tenantId, username: 'ops@rsvault.localhost', password: 'nope-nope' } });
    await expect(wrong.token()).rejects.toMatchObject({ code: 'invalid_grant' });
    u.close();
    wrong.close();
  });
});

describe('CLI', () => {
  it('login, group create/show/list/delete, sp create-for-rbac, role assignments, errors as one line', async () => {
    const cfg = mkdtempSync(path.join(os.tmpdir(), 'rsvault-cli-'));
    const env = { RSVAULT_CONFIG_DIR: cfg };
    try {
      const login = await runCli(['login', '--server', s.origin, '--service-principal', '-u', s.creds.clientId, '-p', s.creds.clientSecret, '--tenant', s.creds.tenantId, '--ca-file', s.creds.caPath], env);
      expect(login.stderr).toBe('');
      expect(login.code).toBe(0);
      expect(statSync(path.join(cfg, 'profile.json')).mode & 0o777).toBe(0o600);

      const create = await runCli(['group', 'create', '-n', 'rg-cli', '-l', 'local', '--tags', 'team=ops'], env);
      expect(create.code).toBe(0);
      expect(JSON.parse(create.stdout)).toMatchObject({ name: 'rg-cli', location: 'local', tags: { team: 'ops' } });
      const show = await runCli(['group', 'show', '-n', 'rg-cli', '-o', 'tsv'], env);
      expect(show.stdout).toContain('rg-cli');
      const table = await runCli(['group', 'list', '-o', 'table'], env);
      expect(table.stdout).toMatch(/^Id\s+Name\s+Type\s+Location\s+ProvisioningState/m);
      expect(table.stdout).toContain('rg-cli');

      const sp = await runCli(['ad', 'sp', 'create-for-rbac', '--name', 'ci-bot', '--role', 'Backup Operator', '--scopes', `/subscriptions/${s.creds.subscriptionId}/resourceGroups/rg-cli`], env);
      expect(sp.code).toBe(0);
      const spOut = JSON.parse(sp.stdout) as { appId: string; displayName: string; password: string; tenant: string };
      expect(spOut).toMatchObject({ displayName: 'ci-bot', tenant: s.creds.tenantId });
      expect(spOut.password.length).toBeGreaterThan(20);
      const ras = await runCli(['role', 'assignment', 'list', '--assignee', spOut.appId, '--all'], env);
      expect(JSON.parse(ras.stdout)).toEqual([expect.objectContaining({ roleDefinitionName: 'Backup Operator', scope: `/subscriptions/${s.creds.subscriptionId}/resourceGroups/rg-cli` })]);
      const bms = await runCli(['ad', 'sp', 'list', '--display-name', 'Backup Management'], env);
      expect(JSON.parse(bms.stdout)[0]).toMatchObject({ appId: '262044b1-e2ce-469f-a196-69ab7ada62d3' });
      const delRa = await runCli(['role', 'assignment', 'delete', '--assignee', spOut.appId, '--role', 'Backup Operator', '--scope', `/subscriptions/${s.creds.subscriptionId}/resourceGroups/rg-cli`], env);
      expect(delRa.code).toBe(0);
      expect(JSON.parse((await runCli(['role', 'assignment', 'list', '--assignee', spOut.appId, '--all'], env)).stdout)).toEqual([]);

      const missing = await runCli(['group', 'show', '-n', 'no-such-rg'], env);
      expect(missing.code).toBe(1);
      expect(missing.stderr.split('\n')[0]).toBe("ERROR: (ResourceGroupNotFound) Resource group 'no-such-rg' could not be found.");
      expect(missing.stderr).toMatch(/Recommendation: .*rsvault group create/);
      expect(missing.stderr).not.toMatch(/at .*\.js:\d+/);

      const del = await runCli(['group', 'delete', '-n', 'rg-cli', '--yes'], env);
      expect(del.code).toBe(0);
      expect((await runCli(['group', 'show', '-n', 'rg-cli'], env)).code).toBe(1);
    } finally {
      rmSync(cfg, { recursive: true, force: true });
    }
  });

  it('--help works and bad config is one clear line with exit 2', async () => {
    const help = await runCli(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/serve/);
    expect(help.stdout).toMatch(/login/);
    // `npx rsvault` resolves the package's own binary after `npm ci` (prepare links it into node_modules/.bin).
    const npx = spawnSync('npx', ['--no-install', 'rsvault', '--help'], { encoding: 'utf8', cwd: ROOT, timeout: 60_000 });
    expect(npx.status, npx.stderr).toBe(0);
    expect(npx.stdout).toMatch(/^Usage: rsvault/);
    const bad = spawnSync(process.execPath, [BIN, 'serve', '--port', 'eighty'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/invalid port 'eighty'/);
    const badEnv = spawnSync(process.execPath, [BIN, 'serve'], { encoding: 'utf8', env: { ...process.env, RSVAULT_LOG_LEVEL: 'loud' } });
    expect(badEnv.status).toBe(2);
    expect(badEnv.stderr).toMatch(/invalid log level 'loud'/);
    const inUse = spawnSync(process.execPath, [BIN, 'serve', '--data-dir', s.dataDir, '--port', String(s.port), '--listen', '127.0.0.1'], { encoding: 'utf8', timeout: 30_000 });
    expect(inUse.status).toBe(2);
    expect(inUse.stderr).toMatch(/address already in use/);
  });
});

describe('restart', () => {
  it('a second start reuses CA, ids and data; SIGTERM exits cleanly', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'rsvault-restart-'));
    try {
      const a = await startTestServer({ dataDir: dir, args: ['--log-level', 'debug'] });
      await a.client.request('PUT', `/subscriptions/${a.creds.subscriptionId}/resourcegroups/keep-me`, { query: { 'api-version': '2021-04-01' }, body: { location: 'local' } });
      expect(await a.stop()).toBe(0);
      // Debug logs carry request ids but never a secret or a token.
      expect(a.output()).toMatch(/"reqId"/);
      expect(a.output()).not.toContain(a.creds.clientSecret);
      expect(a.output()).not.toMatch(/eyJ[\w-]+\.eyJ/);
      const b = await startTestServer({ dataDir: dir });
      expect(b.creds.tenantId).toBe(a.creds.tenantId);
      expect(b.creds.clientSecret).toBe(a.creds.clientSecret);
      expect(b.ca.equals(a.ca)).toBe(true);
      const g = await b.client.request<{ name: string }>('GET', `/subscriptions/${b.creds.subscriptionId}/resourcegroups/keep-me`, { query: { 'api-version': '2021-04-01' } });
      expect(g.name).toBe('keep-me');
      expect(await b.stop()).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
