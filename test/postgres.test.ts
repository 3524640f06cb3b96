/**
 * The core flow on PostgreSQL metadata (always, whatever RSVAULT_TEST_DB says): a throwaway cluster, `rsvault serve
 * --db-url postgres://…`, then login, role assignments, resource groups, key vault, VM encryption, vault, protection,
 * a full and an incremental backup, and a restore whose disk is byte-identical to the image at backup time. The rows
 * are in PostgreSQL (checked with a pg client), and a restart on the same database keeps everything.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startPostgres, type PgCluster } from './helpers/postgres.js';
import { runCli, startTestServer, type TestServer } from './helpers/server.js';
import { CoreFlow } from './core-flow.js';
import { MiB, env, type Job } from './recovery-fixture.js';

let cluster: PgCluster;
let dbUrl: string;
let dataDir: string;
let s: TestServer;
let f: CoreFlow;
const suffix = randomBytes(3).toString('hex');
const KV = `kvpg-${suffix}`;
const SA = `stpg${suffix}`;
const RSV = 'rsvpg';
const VM = 'vmpg';

async function pgQuery<T extends pg.QueryResultRow>(q: string, args: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: dbUrl });
  await c.connect();
  try {
    return (await c.query<T>(q, args)).rows;
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  cluster = await startPostgres();
  dbUrl = await cluster.createDatabase('rsvault_core');
  dataDir = mkdtempSync(path.join(os.tmpdir(), 'rsvault-pg-core-'));
  s = await startTestServer({ dataDir, env, args: ['--db-url', dbUrl] });
  f = new CoreFlow(s, 'rg-pg');
}, 120_000);

afterAll(async () => {
  await s?.stop();
  await cluster?.stop();
  if (f) rmSync(f.tmp, { recursive: true, force: true });
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('the core flow on PostgreSQL', () => {
  it('login, role assignments and resource groups by the CLI; the principals live in PostgreSQL', async () => {
    const cfg = mkdtempSync(path.join(os.tmpdir(), 'rsvault-pg-cli-'));
    const cenv = { RSVAULT_CONFIG_DIR: cfg };
    try {
      const login = await runCli(['login', '--server', s.origin, '--service-principal', '-u', s.creds.clientId, '-p', s.creds.clientSecret, '--tenant', s.creds.tenantId, '--ca-file', s.creds.caPath], cenv);
      expect(login.code, login.stderr).toBe(0);
      expect((await runCli(['group', 'create', '-n', 'rg-pg-cli', '-l', 'local'], cenv)).code).toBe(0);
      const sp = await runCli(['ad', 'sp', 'create-for-rbac', '--name', 'pg-bot', '--role', 'Backup Operator', '--scopes', `/subscriptions/${s.creds.subscriptionId}/resourceGroups/rg-pg-cli`], cenv);
      expect(sp.code, sp.stderr).toBe(0);
      const appId = (JSON.parse(sp.stdout) as { appId: string }).appId;
      const ras = await runCli(['role', 'assignment', 'list', '--assignee', appId, '--all'], cenv);
      expect(JSON.parse(ras.stdout)).toEqual([expect.objectContaining({ roleDefinitionName: 'Backup Operator' })]);
      // Case-insensitive ARM ids: the group is found whatever the case of its name in the URL.
      const show = await runCli(['group', 'show', '-n', 'RG-PG-CLI'], cenv);
      expect(show.code, show.stderr).toBe(0);
      const rows = await pgQuery<{ n: string }>("select count(*) as n from identity_principals");
      expect(Number(rows[0]!.n)).toBeGreaterThanOrEqual(3); // admin, Backup Management Service, pg-bot
    } finally {
      rmSync(cfg, { recursive: true, force: true });
    }
  });

  it('encrypted VM → vault → protect → full and incremental backups → restore byte-identical to the image at backup time', async () => {
    await f.protectedEncryptedVms(KV, RSV, [VM], 8 * MiB);
    await f.storageAccount(SA);
    const image1 = await f.imageBytes(VM);
    const j1 = await f.waitJob(RSV, await f.startBackup(RSV, VM));
    expect(j1.properties.status, JSON.stringify(j1.properties.errorDetails)).toBe('Completed');
    expect(j1.properties.extendedInfo.propertyBag['Backup Type']).toBe('Full');
    await f.guestWrite(VM, 3 * MiB, randomBytes(200_000));
    const image2 = await f.imageBytes(VM);
    const j2 = await f.waitJob(RSV, await f.startBackup(RSV, VM));
    expect(j2.properties.status, JSON.stringify(j2.properties.errorDetails)).toBe('Completed');
    expect(j2.properties.extendedInfo.propertyBag['Backup Type']).toBe('Incremental');
    const rp1 = j1.properties.extendedInfo.propertyBag['Recovery Point Id']!;
    const rp2 = j2.properties.extendedInfo.propertyBag['Recovery Point Id']!;
    for (const [rp, want] of [[rp1, image1], [rp2, image2]] as const) {
      const r: Job = await f.waitJob(RSV, await f.restoreToAccount(RSV, VM, rp, SA));
      expect(r.properties.status, JSON.stringify(r.properties.errorDetails)).toBe('Completed');
      expect(f.restoredOsDisk(r, SA).equals(want)).toBe(true);
    }
    const pts = await pgQuery<{ id: string; time: number }>('select id, time from recovery_points order by time');
    expect(pts.map((p) => p.id)).toEqual([rp1, rp2]);
    expect(typeof pts[0]!.time).toBe('string'); // int8 on the wire: the server maps it to numbers itself
    const jobs = await pgQuery<{ operation: string; status: string }>("select operation, status from recovery_jobs where operation in ('Backup','Restore') order by start_time");
    expect(jobs).toEqual([
      { operation: 'Backup', status: 'Completed' }, { operation: 'Backup', status: 'Completed' },
      { operation: 'Restore', status: 'Completed' }, { operation: 'Restore', status: 'Completed' },
    ]);
  });

  it('a restart on the same database keeps principals, vaults and recovery points', async () => {
    await s.stop({ keepData: true });
    s = await startTestServer({ dataDir, env, args: ['--db-url', dbUrl] });
    f = new CoreFlow(s, 'rg-pg');
    const rps = await s.client.list<{ name: string }>(`${f.itemPath(RSV, VM)}/recoveryPoints`, { query: { 'api-version': '2023-02-01' } });
    expect(rps).toHaveLength(2);
  });
});

describe('rsvault admin migrate-db: an embedded installation moves to PostgreSQL', () => {
  it('copies every table; the server on PostgreSQL has the same keys, vaults and recovery points (restorable), and new rows get fresh ids', { timeout: 240_000 }, async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'rsvault-migrate-'));
    let e: TestServer | undefined;
    try {
      e = await startTestServer({ dataDir: dir, env, args: ['--db-url', path.join(dir, 'rsvault.db')] });
      const fe = new CoreFlow(e, 'rg-mig');
      await fe.protectedEncryptedVms(`kvmig-${suffix}`, 'rsvmig', ['vmmig'], 4 * MiB);
      const image = await fe.imageBytes('vmmig');
      const j = await fe.waitJob('rsvmig', await fe.startBackup('rsvmig', 'vmmig'));
      expect(j.properties.status).toBe('Completed');
      await e.stop({ keepData: true });
      e = undefined;

      const target = await cluster.createDatabase('rsvault_migrated');
      const r = await runCli(['admin', 'migrate-db', '--from', `sqlite:${path.join(dir, 'rsvault.db')}`, '--to', target]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^recovery_points\t1$/m);
      expect(r.stdout).toMatch(/^keyvault_audit\t[1-9]\d*$/m);
      const again = await runCli(['admin', 'migrate-db', '--from', path.join(dir, 'rsvault.db'), '--to', target]);
      expect(again.code).toBe(2);
      expect(again.stderr).toMatch(/not empty/);
      expect((await runCli(['admin', 'migrate-db', '--from', '/nonexistent.db', '--to', target])).code).toBe(2);

      e = await startTestServer({ dataDir: dir, env, args: ['--db-url', target] });
      const fp = new CoreFlow(e, 'rg-mig');
      // Key Vault values sealed at rest open on the new database (same master key), auto ids continue (audit rows).
      const key = await fp.kv<{ key: { kid: string } }>(`kvmig-${suffix}`, 'GET', '/keys/kek');
      expect(key.key.kid).toMatch(/\/keys\/kek\//);
      await fp.storageAccount(SA);
      const rp = j.properties.extendedInfo.propertyBag['Recovery Point Id']!;
      const rj = await fp.waitJob('rsvmig', await fp.restoreToAccount('rsvmig', 'vmmig', rp, SA));
      expect(rj.properties.status, JSON.stringify(rj.properties.errorDetails)).toBe('Completed');
      expect(fp.restoredOsDisk(rj, SA).equals(image)).toBe(true);
      const j2 = await fp.waitJob('rsvmig', await fp.startBackup('rsvmig', 'vmmig'));
      expect(j2.properties.status, JSON.stringify(j2.properties.errorDetails)).toBe('Completed');
    } finally {
      await e?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
