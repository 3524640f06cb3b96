/**
 * Scale-out proof: PostgreSQL + one `--role api` process + two `--role worker` processes + a `--role scheduler`
 * process, sharing one data dir (chunk stores, disks, storage accounts). Several VMs are backed up at once; one
 * worker is killed with SIGKILL while it runs a backup: every job still ends Completed or Failed with a code, each
 * recovery point restores byte-identical to the image at backup time, and a restore whose worker is killed ends
 * with a code (UserErrorRestoreInterrupted) or Completed — never InProgress, never half-presented.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startPostgres, type PgCluster } from './helpers/postgres.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { CoreFlow } from './core-flow.js';
import { MiB, env as baseEnv, type Job } from './recovery-fixture.js';
import { get } from './restore-helpers.js';

const env = { ...baseEnv, RSVAULT_QUEUE_LEASE_MS: '3000' };
let cluster: PgCluster;
let dbUrl: string;
let dataDir: string;
let apiS: TestServer;
const workers: TestServer[] = [];
let sched: TestServer;
let f: CoreFlow;
const suffix = randomBytes(3).toString('hex');
const KV = `kvso-${suffix}`;
const SA = `stso${suffix}`;
const RSV = 'rsvso';
const VMS = ['vm0', 'vm1', 'vm2', 'vm3'];
const SIZE = 48 * MiB;

async function q<T extends pg.QueryResultRow>(text: string, args: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: dbUrl });
  await c.connect();
  try {
    return (await c.query<T>(text, args)).rows;
  } finally {
    await c.end();
  }
}

const startRole = (role: string) => startTestServer({ dataDir, env, args: ['--db-url', dbUrl, '--role', role] });

async function kill(s: TestServer) {
  await new Promise<void>((resolve) => {
    if (s.proc.exitCode !== null) return resolve();
    s.proc.once('exit', () => resolve());
    s.proc.kill('SIGKILL');
  });
  s.client.close();
}

/** The pid of the process holding an active queue job of `queue` (workerId = host:pid:random), once one does. */
async function holderOf(queue: string, jobIds: string[], timeoutMs = 60_000): Promise<{ pid: number; jobId: string }> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const rows = await q<{ locked_by: string; payload_json: string }>("select locked_by, payload_json from platform_jobs where name = $1 and state = 'active'", [queue]);
    for (const r of rows) {
      const jobId = (JSON.parse(r.payload_json) as { jobId: string }).jobId;
      if (jobIds.includes(jobId)) return { pid: Number(r.locked_by.split(':')[1]), jobId };
    }
    if (Date.now() > end) throw new Error(`no active ${queue} job`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

beforeAll(async () => {
  cluster = await startPostgres();
  dbUrl = await cluster.createDatabase('rsvault_scale');
  dataDir = mkdtempSync(path.join(os.tmpdir(), 'rsvault-scale-'));
  apiS = await startRole('api'); // first: it creates the installation (CA, keys, credentials)
  workers.push(await startRole('worker'), await startRole('worker'));
  sched = await startRole('scheduler');
  f = new CoreFlow(apiS, 'rg-so');
  await f.protectedEncryptedVms(KV, RSV, VMS, SIZE);
  await f.storageAccount(SA);
}, 300_000);

afterAll(async () => {
  for (const s of [apiS, ...workers, sched]) await s?.stop().catch(() => undefined);
  await cluster?.stop();
  if (f) rmSync(f.tmp, { recursive: true, force: true });
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('scale-out: api + 2 workers + scheduler on PostgreSQL', () => {
  it('each process reports its roles and a reachable database and queue on /healthz', async () => {
    const health = async (s: TestServer) => JSON.parse((await get(s, `${s.origin}/healthz`)).body.toString()) as { status: string; roles: string[]; db: { dialect: string; ok: boolean }; queue: { ok: boolean; working: boolean } };
    expect(await health(apiS)).toMatchObject({ status: 'ok', roles: ['api'], db: { dialect: 'postgres', ok: true }, queue: { ok: true, working: false } });
    expect(await health(workers[0]!)).toMatchObject({ status: 'ok', roles: ['worker'], db: { dialect: 'postgres', ok: true }, queue: { ok: true, working: true } });
    expect(await health(sched)).toMatchObject({ status: 'ok', roles: ['scheduler'], queue: { working: false } });
    // A worker serves no ARM API.
    expect((await get(workers[0]!, `${workers[0]!.origin}/subscriptions?api-version=2020-01-01`)).status).toBe(404);
  });

  it('concurrent backups; one worker SIGKILLed mid-backup; every job ends Completed or Failed with a code; every point restores byte-identical', async () => {
    const images = new Map<string, Buffer>();
    for (const vm of VMS) images.set(vm, await f.imageBytes(vm));
    const jobIds = await Promise.all(VMS.map((vm) => f.startBackup(RSV, vm)));
    // Kill the worker holding one of the backups while it runs.
    const victim = await holderOf('recovery.backup', jobIds);
    const w = workers.find((x) => x.proc.pid === victim.pid)!;
    expect(w, `pid ${victim.pid} is one of the workers`).toBeDefined();
    await kill(w);
    const jobs: Job[] = [];
    for (const id of jobIds) jobs.push(await f.waitJob(RSV, id, 240_000));
    for (const j of jobs) {
      expect(['Completed', 'Failed']).toContain(j.properties.status);
      if (j.properties.status === 'Failed') expect(j.properties.errorDetails[0]?.errorTitle, JSON.stringify(j.properties.errorDetails)).toBeTruthy();
    }
    // The killed worker's backup was taken over by the other worker (its lease expired) and completed.
    const taken = jobs.find((j) => j.name === victim.jobId)!;
    expect(taken.properties.status, JSON.stringify(taken.properties.errorDetails)).toBe('Completed');
    const attempts = await q<{ attempt: number }>("select attempt from platform_jobs where name = 'recovery.backup' and payload_json like $1", [`%${victim.jobId}%`]);
    expect(attempts[0]!.attempt).toBeGreaterThanOrEqual(2);

    // Restore every recovery point (on the surviving worker) and compare with the image at backup time.
    for (const [i, vm] of VMS.entries()) {
      const j = jobs[i]!;
      if (j.properties.status !== 'Completed') continue;
      const rp = j.properties.extendedInfo.propertyBag['Recovery Point Id']!;
      const r = await f.waitJob(RSV, await f.restoreToAccount(RSV, vm, rp, SA), 240_000);
      expect(r.properties.status, JSON.stringify(r.properties.errorDetails)).toBe('Completed');
      expect(f.restoredOsDisk(r, SA).equals(images.get(vm)!), `${vm} restored byte-identical`).toBe(true);
    }
    expect(jobs.filter((j) => j.properties.status === 'Completed').length).toBeGreaterThanOrEqual(VMS.length - 1);
    // Metrics of the surviving worker count the outcomes; the queue depth is reported.
    const alive = workers.find((x) => x !== w)!;
    const metrics = (await get(alive, `${alive.origin}/metrics`)).body.toString();
    expect(metrics).toMatch(/rsvault_job_outcomes_total\{queue="recovery.backup",outcome="completed"\} [1-9]/);
    expect(metrics).toMatch(/rsvault_job_outcomes_total\{queue="recovery.backup",outcome="lease_expired"\} [1-9]/);
    expect(metrics).toMatch(/# TYPE rsvault_queue_jobs gauge/);
  });

  it('a restore whose worker is SIGKILLed ends Failed with UserErrorRestoreInterrupted (or Completed) on another worker; nothing half-written is presented', async () => {
    workers.push(await startRole('worker')); // a replacement, so two workers run again
    const vm = VMS[0]!;
    const rps = await f.c.list<{ name: string }>(`${f.itemPath(RSV, vm)}/recoveryPoints`, { query: { 'api-version': '2023-02-01' } });
    const before = new Set(readdirSync(path.join(dataDir, 'storage', SA)));
    const jobId = await f.restoreToAccount(RSV, vm, rps[0]!.name, SA);
    const victim = await holderOf('recovery.restore', [jobId]);
    await kill(workers.find((x) => x.proc.pid === victim.pid)!);
    const j = await f.waitJob(RSV, jobId, 120_000);
    const added = readdirSync(path.join(dataDir, 'storage', SA)).filter((x) => !before.has(x) && x !== '.staging');
    if (j.properties.status === 'Failed') {
      expect(j.properties.errorDetails[0]).toMatchObject({ errorTitle: 'UserErrorRestoreInterrupted', errorCode: 400323 });
      expect(added).toEqual([]);
      const staging = path.join(dataDir, 'storage', SA, '.staging');
      expect(existsSync(staging) ? readdirSync(staging).filter((c) => c.endsWith(jobId.slice(0, 8))) : []).toEqual([]);
    } else {
      expect(j.properties.status).toBe('Completed');
      expect(added).toHaveLength(1);
    }
  });
});
