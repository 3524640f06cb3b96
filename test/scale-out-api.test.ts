/**
 * Scale-out API (issue 14 items 1–2): two `--role api` processes on one PostgreSQL database take the same writes at
 * the same time — resource groups, Recovery Services vaults, backup policies, service principals and role
 * assignments, the same name from both and different names at once. Every request ends in its documented status
 * (never a 500 from a unique-key race), and the database holds each thing once.
 *
 * Runs in the `postgres` vitest project (its cluster: test/helpers/pg-global-setup.ts).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { testDatabaseUrl } from './helpers/postgres.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { BK_API, RS_API } from './recovery-fixture.js';
import type { RsvaultClient } from '../src/client/index.js';

const RG_API = '2021-04-01';
const AUTH_API = '2022-04-01';
const N = 4; // concurrent requests per process
let dbUrl: string;
let dataDir: string;
const apis: TestServer[] = [];
let sub: string;

const startApi = () => startTestServer({ dataDir, args: ['--db-url', dbUrl, '--role', 'api'] });
/** `N` requests through each api process, all in flight at once; their statuses and bodies. */
async function fromBoth(fn: (c: RsvaultClient, i: number) => Promise<{ status: number; body: unknown }>): Promise<{ status: number; body: unknown }[]> {
  // Tokens first, so that the requests themselves start together.
  await Promise.all(apis.map((s) => s.client.token()));
  return Promise.all(apis.flatMap((s, k) => Array.from({ length: N }, (_, i) => fn(s.client, k * N + i))));
}
const statuses = (rs: { status: number }[]) => [...new Set(rs.map((r) => r.status))].sort();

beforeAll(async () => {
  const url = await testDatabaseUrl('rsvault_apis');
  if (!url) throw new Error('test/scale-out-api.test.ts runs on PostgreSQL: run it in the postgres project (npx vitest run --project postgres …)');
  dbUrl = url;
  dataDir = mkdtempSync(path.join(os.tmpdir(), 'rsvault-apis-'));
  apis.push(await startApi()); // first: it creates the installation (CA, keys, credentials)
  apis.push(await startApi());
  sub = apis[0]!.creds.subscriptionId;
}, 120_000);

afterAll(async () => {
  for (const s of apis) await s.stop().catch(() => undefined);
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('scale-out: two api processes on one PostgreSQL database, concurrent writes', () => {
  const rg = (name: string) => `/subscriptions/${sub}/resourceGroups/${name}`;
  const vault = (g: string, name: string) => `${rg(g)}/providers/Microsoft.RecoveryServices/vaults/${name}`;

  it('the same resource group and the same vault PUT from both at once: every PUT succeeds, each exists once', async () => {
    const rgs = await fromBoth((c) => c.send('PUT', rg('rg-apis'), { query: { 'api-version': RG_API }, body: { location: 'local' } }));
    expect(statuses(rgs).every((s) => s === 200 || s === 201), JSON.stringify(rgs.filter((r) => r.status >= 300))).toBe(true);
    const groups = await apis[1]!.client.list<{ name: string }>(`/subscriptions/${sub}/resourcegroups`, { query: { 'api-version': RG_API } });
    expect(groups.filter((g) => g.name.toLowerCase() === 'rg-apis')).toHaveLength(1);

    const vs = await fromBoth((c) => c.send('PUT', vault('rg-apis', 'rsv-same'), { query: { 'api-version': RS_API }, body: { location: 'local', sku: { name: 'Standard' }, properties: {} } }));
    expect(vs.every((r) => r.status === 200 || r.status === 201), JSON.stringify(vs.filter((r) => r.status >= 300))).toBe(true);
    const ids = new Set(vs.map((r) => (r.body as { id: string }).id.toLowerCase()));
    expect(ids.size).toBe(1);
    const vaults = await apis[0]!.client.list<{ name: string }>(`${rg('rg-apis')}/providers/Microsoft.RecoveryServices/vaults`, { query: { 'api-version': RS_API } });
    expect(vaults.map((v) => v.name)).toEqual(['rsv-same']);
  });

  it('different vaults and policies created through both at once all exist', async () => {
    const vs = await fromBoth((c, i) => c.send('PUT', vault('rg-apis', `rsv-${i}`), { query: { 'api-version': RS_API }, body: { location: 'local', sku: { name: 'Standard' }, properties: {} } }));
    expect(vs.every((r) => r.status === 200 || r.status === 201), JSON.stringify(vs.filter((r) => r.status >= 300))).toBe(true);
    const vaults = await apis[1]!.client.list<{ name: string }>(`${rg('rg-apis')}/providers/Microsoft.RecoveryServices/vaults`, { query: { 'api-version': RS_API } });
    expect(vaults.map((v) => v.name).sort()).toEqual(['rsv-same', ...Array.from({ length: 2 * N }, (_, i) => `rsv-${i}`)].sort());

    const policy = { properties: { backupManagementType: 'AzureIaasVM', schedulePolicy: { schedulePolicyType: 'SimpleSchedulePolicy', scheduleRunFrequency: 'Daily', scheduleRunTimes: ['2024-01-01T02:30:00Z'] }, retentionPolicy: { retentionPolicyType: 'LongTermRetentionPolicy', dailySchedule: { retentionTimes: ['2024-01-01T02:30:00Z'], retentionDuration: { count: 14, durationType: 'Days' } } } } };
    const ps = await fromBoth((c, i) => c.send('PUT', `${vault('rg-apis', 'rsv-same')}/backupPolicies/${i % 2 ? 'shared' : `pol-${i}`}`, { query: { 'api-version': BK_API }, body: policy }));
    expect(ps.every((r) => r.status === 200 || r.status === 201), JSON.stringify(ps.filter((r) => r.status >= 300))).toBe(true);
    const names = (await apis[0]!.client.list<{ name: string }>(`${vault('rg-apis', 'rsv-same')}/backupPolicies`, { query: { 'api-version': BK_API } })).map((p) => p.name);
    const mine = names.filter((n) => n === 'shared' || /^pol-\d+$/.test(n)).sort();
    expect(mine).toEqual(['shared', ...Array.from({ length: N }, (_, i) => `pol-${2 * i}`)].sort());
  });

  it('role assignments: the same assignment PUT from both at once is one assignment; another name for it is 409 RoleAssignmentExists', async () => {
    const sps = await fromBoth((c, i) => c.send('POST', '/v1.0/servicePrincipals', { body: { displayName: `apis-sp-${i}` } }));
    expect(statuses(sps)).toEqual([201]);
    const principals = sps.map((r) => (r.body as { id: string }).id);
    expect(new Set(principals).size).toBe(2 * N);
    const roles = await apis[0]!.client.request<{ value: { id: string }[] }>('GET', `/subscriptions/${sub}/providers/Microsoft.Authorization/roleDefinitions`, { query: { 'api-version': AUTH_API, $filter: "roleName eq 'Backup Operator'" } });
    const roleDefinitionId = roles.value[0]!.id;
    const scope = rg('rg-apis');
    const assign = (c: RsvaultClient, name: string, principalId: string) => c.send('PUT', `${scope}/providers/Microsoft.Authorization/roleAssignments/${name}`, { query: { 'api-version': AUTH_API }, body: { properties: { roleDefinitionId, principalId } } });

    // One name, one principal, from everywhere at once: idempotent.
    const name = randomUUID();
    const same = await fromBoth((c) => assign(c, name, principals[0]!));
    expect(statuses(same), JSON.stringify(same.filter((r) => r.status !== 201))).toEqual([201]);
    const ofP0 = await apis[1]!.client.request<{ value: { name: string }[] }>('GET', `${scope}/providers/Microsoft.Authorization/roleAssignments`, { query: { 'api-version': AUTH_API, $filter: `principalId eq '${principals[0]}'` } });
    expect(ofP0.value.map((a) => a.name)).toEqual([name]);

    // The same principal + role + scope under different names at once: one wins, the others are told it exists.
    const names = Array.from({ length: 2 * N }, () => randomUUID());
    const racing = await fromBoth((c, i) => assign(c, names[i]!, principals[1]!));
    expect(racing.filter((r) => r.status === 201), JSON.stringify(racing.map((r) => r.status))).toHaveLength(1);
    const losers = racing.filter((r) => r.status !== 201);
    expect(losers.every((r) => r.status === 409 && (r.body as { error: { code: string } }).error.code === 'RoleAssignmentExists'), JSON.stringify(losers)).toBe(true);
    const ofP1 = await apis[0]!.client.request<{ value: { name: string }[] }>('GET', `${scope}/providers/Microsoft.Authorization/roleAssignments`, { query: { 'api-version': AUTH_API, $filter: `principalId eq '${principals[1]}'` } });
    expect(ofP1.value).toHaveLength(1);

    // Different principals at once: all assigned.
    const many = await fromBoth((c, i) => assign(c, randomUUID(), principals[i]!));
    // principals[0] and [1] already hold the role on this scope under another name: 409 for them, 201 for the rest.
    expect(many.slice(2).map((r) => r.status)).toEqual(Array.from({ length: 2 * N - 2 }, () => 201));
    expect(many.slice(0, 2).map((r) => r.status)).toEqual([409, 409]);
    const all = await apis[1]!.client.request<{ value: { properties: { principalId: string } }[] }>('GET', `${scope}/providers/Microsoft.Authorization/roleAssignments`, { query: { 'api-version': AUTH_API } });
    const perPrincipal = principals.map((p) => all.value.filter((a) => a.properties.principalId === p).length);
    expect(perPrincipal).toEqual(principals.map(() => 1));
  });
});
