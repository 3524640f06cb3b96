/**
 * Scheduler and retention against the real server, with the scheduler's clock moved (RSVAULT_CLOCK_OFFSET_MS) so
 * that a policy's run time is a few seconds away: the backup starts by itself; an expired point is pruned and its
 * chunks are collected.
 */
import { describe, it, expect, afterAll } from 'vitest';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { startTestServer, type TestServer } from './helpers/server.js';
import { Fixture, BK_API, MiB, env, type Job, type RecoveryPoint } from './recovery-fixture.js';

let s: TestServer | undefined;
let f: Fixture | undefined;
const dataDir = mkdtempSync(path.join(os.tmpdir(), 'rsv-sched-'));
const dataDir2 = mkdtempSync(path.join(os.tmpdir(), 'rsv-crash-'));
const dataDir3 = mkdtempSync(path.join(os.tmpdir(), 'rsv-missed-'));
const RG = 'rg-sched';
const bk = { 'api-version': BK_API };

function countFiles(dir: string): number {
  let n = 0;
  let entries: import('node:fs').Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0; // removed concurrently (GC)
  }
  for (const e of entries) n += e.isDirectory() ? countFiles(path.join(dir, e.name)) : e.isFile() ? 1 : 0;
  return n;
}

/** A daily policy at `runTime` (ISO, only HH:MM counts) keeping daily points for 7 days. */
async function putDailyPolicy(fx: Fixture, vault: string, name: string, runTime: string): Promise<void> {
  await fx.s.client.request('PUT', `${fx.vaultPath(vault)}/backupPolicies/${name}`, {
    query: bk,
    body: { properties: { backupManagementType: 'AzureIaasVM', schedulePolicy: { schedulePolicyType: 'SimpleSchedulePolicy', scheduleRunFrequency: 'Daily', scheduleRunTimes: [runTime] }, retentionPolicy: { retentionPolicyType: 'LongTermRetentionPolicy', dailySchedule: { retentionTimes: [runTime], retentionDuration: { count: 7, durationType: 'Days' } } } } },
  });
}

afterAll(async () => {
  await s?.stop();
  rmSync(dataDir, { recursive: true, force: true });
  rmSync(dataDir2, { recursive: true, force: true });
  rmSync(dataDir3, { recursive: true, force: true });
  if (f) rmSync(f.tmp, { recursive: true, force: true });
});

describe('scheduled backups and retention', () => {
  it('a policy due in the next seconds starts a backup by itself; retention prunes an expired point (chunks → GC)', async () => {
    // The next half-hour slot, at least a minute away in real time: the scheduler clock will be moved next to it.
    const slot = Math.ceil((Date.now() + 60_000) / 1_800_000) * 1_800_000;
    const hhmm = new Date(slot).toISOString().slice(11, 16);
    const runTime = `2024-01-01T${hhmm}:00Z`;

    s = await startTestServer({ dataDir, env });
    f = new Fixture(s, RG);
    await f.group();
    await f.createVault('rsvs');
    await putDailyPolicy(f, 'rsvs', 'soon', runTime);
    await f.vm('vmsched', 8 * MiB);
    expect((await f.opStatus(await f.enable('rsvs', 'vmsched', 'soon'))).status).toBe('Succeeded');
    await s.stop({ keepData: true });

    // Restart with the scheduler clock ~3 s before the slot, ticking twice a second; retention every second.
    const offset = slot - Date.now() - 3000;
    s = await startTestServer({ dataDir, env: { ...env, RSVAULT_CLOCK_OFFSET_MS: String(offset), RSVAULT_SCHEDULER_TICK_MS: '500', RSVAULT_RETENTION_CRON: '* * * * * *' } });
    (f as { s: TestServer }).s = s;
    const jobsPath = `${f.vaultPath('rsvs')}/backupJobs`;
    let scheduled: Job | undefined;
    for (let i = 0; i < 300 && !scheduled; i++) {
      const list = await s.client.list<Job & { properties: { isUserTriggered: boolean } }>(jobsPath, { query: { ...bk, $filter: "operation eq 'Backup'" } });
      scheduled = list.find((j) => !j.properties.isUserTriggered);
      if (!scheduled) await new Promise((r) => setTimeout(r, 100));
    }
    expect(scheduled, 'a scheduled Backup job').toBeDefined();
    const done = await f.waitJob('rsvs', scheduled!.name);
    expect(done.properties.status).toBe('Completed');
    let rps = await s.client.list<RecoveryPoint>(`${f.itemPath('rsvs', 'vmsched')}/recoveryPoints`, { query: bk });
    expect(rps).toHaveLength(1);
    const kept = rps[0]!.name;
    // policy retention: 7 days from the slot
    expect(Date.parse(rps[0]!.properties.recoveryPointProperties.expiryTime)).toBe(slot + 7 * 86_400_000);
    // the same slot never fires twice
    await new Promise((r) => setTimeout(r, 1500));
    expect((await s.client.list<Job>(jobsPath, { query: { ...bk, $filter: "operation eq 'Backup'" } })).length).toBe(1);

    // An on-demand point with new data, expiring soon (real time); the scheduler clock is already past it.
    await f.guestWrite('vmsched', 0, randomBytes(2 * MiB));
    const vaultDir = path.join(dataDir, 'vaults');
    const storeDir = path.join(vaultDir, readdirSync(vaultDir)[0]!, 'store', 'chunks');
    const j2 = await f.waitJob('rsvs', (await f.opStatus(await f.backup('rsvs', 'vmsched', new Date(Date.now() + 1500).toISOString()))).properties!.jobId);
    expect(j2.properties.status).toBe('Completed');
    const chunksWithBoth = countFiles(storeDir);
    for (let i = 0; i < 100; i++) {
      rps = await s.client.list<RecoveryPoint>(`${f.itemPath('rsvs', 'vmsched')}/recoveryPoints`, { query: bk });
      if (rps.length === 1 && countFiles(storeDir) < chunksWithBoth) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(rps.map((r) => r.name)).toEqual([kept]);
    expect(countFiles(storeDir)).toBeLessThan(chunksWithBoth);
  }, 90_000);

  it('a backup whose server was killed mid-transfer is picked up again after restart and finishes (one recovery point)', async () => {
    await s?.stop();
    const crashEnv = { ...env, RSVAULT_QUEUE_LEASE_MS: '1500' };
    s = await startTestServer({ dataDir: dataDir2, env: crashEnv });
    const g = new Fixture(s, 'rg-crash');
    await g.group();
    await g.createVault('rsvc');
    await g.vm('vmbig', 96 * MiB);
    expect((await g.opStatus(await g.enable('rsvc', 'vmbig'))).status).toBe('Succeeded');
    const jobId = (await g.opStatus(await g.backup('rsvc', 'vmbig'))).properties!.jobId;
    let seen = '';
    for (let i = 0; i < 500; i++) {
      const j = await g.job('rsvc', jobId);
      seen = j.properties.status;
      if (seen !== 'InProgress' || j.properties.extendedInfo.tasksList.some((t) => t.taskId === 'Transfer data to vault' && t.status === 'InProgress')) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    s.proc.kill('SIGKILL');
    await once(s.proc, 'exit');
    s.client.close();
    s = await startTestServer({ dataDir: dataDir2, env: crashEnv });
    (g as { s: TestServer }).s = s;
    const done = await g.waitJob('rsvc', jobId, 60_000);
    expect(done.properties.status).toBe('Completed');
    const rps = await s.client.list<RecoveryPoint>(`${g.itemPath('rsvc', 'vmbig')}/recoveryPoints`, { query: bk });
    expect(rps).toHaveLength(1);
    expect((await g.item('rsvc', 'vmbig')).properties.protectionState).toBe('Protected');
    rmSync(g.tmp, { recursive: true, force: true });
    expect(seen).toBe('InProgress'); // the kill really interrupted a running backup
  }, 90_000);

  it('a scheduled backup missed while the server was down runs once when it starts again (catch-up), not twice', async () => {
    await s?.stop();
    const slot = Math.ceil((Date.now() + 60_000) / 1_800_000) * 1_800_000;
    const runTime = `2024-01-01T${new Date(slot).toISOString().slice(11, 16)}:00Z`;
    s = await startTestServer({ dataDir: dataDir3, env });
    const g = new Fixture(s, 'rg-missed');
    await g.group();
    await g.createVault('rsvm');
    await putDailyPolicy(g, 'rsvm', 'nightly', runTime);
    await g.vm('vmmissed', 8 * MiB);
    expect((await g.opStatus(await g.enable('rsvm', 'vmmissed', 'nightly'))).status).toBe('Succeeded');
    await s.stop({ keepData: true });

    // The server comes back 20 minutes after the slot it was down for.
    const late = { ...env, RSVAULT_CLOCK_OFFSET_MS: String(slot + 20 * 60_000 - Date.now()), RSVAULT_SCHEDULER_TICK_MS: '500' };
    s = await startTestServer({ dataDir: dataDir3, env: late });
    (g as { s: TestServer }).s = s;
    const jobsPath = `${g.vaultPath('rsvm')}/backupJobs`;
    const scheduledJobs = async (): Promise<Job[]> =>
      (await s!.client.list<Job & { properties: { isUserTriggered: boolean } }>(jobsPath, { query: { ...bk, $filter: "operation eq 'Backup'" } })).filter((j) => !(j.properties as { isUserTriggered: boolean }).isUserTriggered);
    let jobs: Job[] = [];
    for (let i = 0; i < 200 && jobs.length === 0; i++) {
      jobs = await scheduledJobs();
      if (jobs.length === 0) await new Promise((r) => setTimeout(r, 100));
    }
    expect(jobs, 'the missed slot ran').toHaveLength(1);
    expect((await g.waitJob('rsvm', jobs[0]!.name)).properties.status).toBe('Completed');
    const rps = await s.client.list<RecoveryPoint>(`${g.itemPath('rsvm', 'vmmissed')}/recoveryPoints`, { query: bk });
    expect(rps).toHaveLength(1);
    expect(Date.parse(rps[0]!.properties.recoveryPointProperties.expiryTime)).toBe(slot + 7 * 86_400_000); // the missed slot's retention

    // Another restart (still before the next slot): nothing runs again.
    await s.stop({ keepData: true });
    s = await startTestServer({ dataDir: dataDir3, env: late });
    (g as { s: TestServer }).s = s;
    await new Promise((r) => setTimeout(r, 2000));
    expect(await scheduledJobs()).toHaveLength(1);
    rmSync(g.tmp, { recursive: true, force: true });
  }, 90_000);
});
