/**
 * Scale-out scheduling (issue 14 item 2): PostgreSQL + one `--role api` + one `--role worker` + TWO `--role scheduler`
 * processes on one database. Both schedulers' clocks are moved (RSVAULT_CLOCK_OFFSET_MS, the same offset) so that a
 * policy's slot comes due a few seconds after both are up, and both tick every 100 ms across it: each protected
 * item gets exactly one backup job for the slot (one queue job, one Backup job, one recovery point), never two.
 *
 * Runs in the `postgres` vitest project (its cluster: test/helpers/pg-global-setup.ts).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { testDatabaseUrl } from './helpers/postgres.js';
import { openServerDb, startTestServer, type TestServer } from './helpers/server.js';
import { Fixture, BK_API, MiB, env, type Job, type RecoveryPoint } from './recovery-fixture.js';
import { get } from './restore-helpers.js';
import { sql } from '../src/platform/db/index.js';

const RG = 'rg-sched-so';
const RSV = 'rsvsched';
const VMS = ['vms0', 'vms1', 'vms2'];
const bk = { 'api-version': BK_API };
let dbUrl: string;
let dataDir: string;
let api: TestServer;
let worker: TestServer;
const schedulers: TestServer[] = [];
let f: Fixture;

const startRole = (role: string, extraEnv: Record<string, string> = {}) => startTestServer({ dataDir, env: { ...env, ...extraEnv }, args: ['--db-url', dbUrl, '--role', role] });

beforeAll(async () => {
  const url = await testDatabaseUrl('rsvault_sched');
  if (!url) throw new Error('test/scale-out-scheduler.test.ts runs on PostgreSQL: run it in the postgres project (npx vitest run --project postgres …)');
  dbUrl = url;
  dataDir = mkdtempSync(path.join(os.tmpdir(), 'rsvault-sched-so-'));
  api = await startRole('api'); // first: it creates the installation (CA, keys, credentials)
  worker = await startRole('worker');
  f = new Fixture(api, RG);
  await f.group();
}, 120_000);

afterAll(async () => {
  for (const s of [api, worker, ...schedulers]) await s?.stop().catch(() => undefined);
  if (f) rmSync(f.tmp, { recursive: true, force: true });
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('scale-out: two scheduler processes on PostgreSQL', () => {
  it('a slot that comes due while both schedulers run fires once per item: one queue job, one Backup job, one recovery point', async () => {
    // The next half-hour slot at least a minute away in real time; the schedulers' clocks are moved next to it.
    const slot = Math.ceil((Date.now() + 60_000) / 1_800_000) * 1_800_000;
    const runTime = `2024-01-01T${new Date(slot).toISOString().slice(11, 16)}:00Z`;
    await f.createVault(RSV);
    await api.client.request('PUT', `${f.vaultPath(RSV)}/backupPolicies/soon`, {
      query: bk,
      body: { properties: { backupManagementType: 'AzureIaasVM', schedulePolicy: { schedulePolicyType: 'SimpleSchedulePolicy', scheduleRunFrequency: 'Daily', scheduleRunTimes: [runTime] }, retentionPolicy: { retentionPolicyType: 'LongTermRetentionPolicy', dailySchedule: { retentionTimes: [runTime], retentionDuration: { count: 7, durationType: 'Days' } } } } },
    });
    for (const vm of VMS) {
      await f.vm(vm, 4 * MiB);
      expect((await f.opStatus(await f.enable(RSV, vm, 'soon'))).status).toBe('Succeeded');
    }

    // Both schedulers share one clock offset: the slot is 12 s of real time after they start starting.
    const offset = slot - Date.now() - 12_000;
    const schedEnv = { RSVAULT_CLOCK_OFFSET_MS: String(offset), RSVAULT_SCHEDULER_TICK_MS: '100' };
    schedulers.push(...(await Promise.all([startRole('scheduler', schedEnv), startRole('scheduler', schedEnv)])));
    // Both run before the slot (a slot both see come due, not a catch-up of one of them).
    expect(Date.now() + offset, 'both schedulers were up before the slot').toBeLessThan(slot);
    for (const s of schedulers) {
      const h = JSON.parse((await get(s, `${s.origin}/healthz`)).body.toString()) as { status: string; roles: string[]; db: { dialect: string }; queue: { working: boolean } };
      expect(h).toMatchObject({ status: 'ok', roles: ['scheduler'], db: { dialect: 'postgres' }, queue: { working: false } });
    }

    const jobsPath = `${f.vaultPath(RSV)}/backupJobs`;
    const scheduled = async () =>
      (await api.client.list<Job & { properties: { isUserTriggered: boolean; entityFriendlyName: string } }>(jobsPath, { query: { ...bk, $filter: "operation eq 'Backup'" } })).filter((j) => !j.properties.isUserTriggered);
    let jobs = await scheduled();
    for (let i = 0; i < 400 && jobs.length < VMS.length; i++) {
      await new Promise((r) => setTimeout(r, 100));
      jobs = await scheduled();
    }
    expect(jobs.length, 'every item got its scheduled backup').toBeGreaterThanOrEqual(VMS.length);
    for (const j of jobs) expect((await f.waitJob(RSV, j.name)).properties.status).toBe('Completed');
    // Both schedulers keep ticking over the window that holds the slot (100 ms ticks): 3 s more, then count.
    await new Promise((r) => setTimeout(r, 3000));

    jobs = await scheduled();
    expect(jobs.map((j) => j.properties.entityFriendlyName.toLowerCase()).sort(), 'one scheduled Backup job per item').toEqual(VMS);
    for (const vm of VMS) {
      const rps = await api.client.list<RecoveryPoint>(`${f.itemPath(RSV, vm)}/recoveryPoints`, { query: bk });
      expect(rps, `${vm}: one recovery point`).toHaveLength(1);
      expect(Date.parse(rps[0]!.properties.recoveryPointProperties.expiryTime)).toBe(slot + 7 * 86_400_000); // the slot's retention
    }
    // One queue job per item for the slot in the shared database, whichever scheduler sent it.
    const { db, close } = openServerDb({ dbUrl });
    try {
      const rows = (await sql<{ unique_key: string }>`select unique_key from platform_jobs where name = ${'recovery.scheduled-backup'}`.execute(db)).rows;
      expect(rows).toHaveLength(VMS.length);
      expect(rows.every((r) => r.unique_key.endsWith(`:${new Date(slot).toISOString()}`))).toBe(true);
    } finally {
      await close();
    }
  }, 180_000);
});
