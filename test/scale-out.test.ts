/**
 * Scale-out proof (issue #14 item 5): PostgreSQL + one `--role api` process + two `--role worker` processes + a
 * `--role scheduler` process; the vault's chunk store is Azure Blob on a real Azurite process. The processes share
 * the data dir for what still lives there (compute disk images, storage accounts, the installation's keys); the
 * vault's chunks, manifests and index files are in Azurite.
 *
 * Ten backups of ten different VMs are started at once; one worker is frozen (SIGSTOP) while it transfers one of
 * them, the job is checked to be still running (not committed), and the worker is SIGKILLed. Then: every job ended
 * Completed or Failed with a code; the victim was taken over (attempt ≥ 2) and completed; the chunks, manifests and
 * index files are blobs in Azurite and the vault's local directory holds no chunk file; with the vault's local
 * `manifests/` directory deleted, every Completed recovery point restores byte-identical to the image at backup time
 * and the product's Verify job completes with every recovery point and chunk verified.
 * Then a restore whose worker is killed ends with a code (UserErrorRestoreInterrupted) or Completed — never
 * InProgress, never half-presented.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { BlobServiceClient, StorageSharedKeyCredential } from '@azure/storage-blob';
import { AZURITE_ACCOUNT, AZURITE_KEY, startAzurite, type LocalServer } from '../src/engine/testdata/object-servers.js';
import { startPostgres, type PgCluster } from './helpers/postgres.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { CoreFlow } from './core-flow.js';
import { BK_API, MiB, env as baseEnv, type Job } from './recovery-fixture.js';
import { get } from './restore-helpers.js';

const CONTAINER = 'rsvault-scale';
let env: Record<string, string>;
let azurite: LocalServer;
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
const VMS = Array.from({ length: 10 }, (_, i) => `vm${i}`);
const SIZE = 8 * MiB;

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
async function holderOf(queue: string, jobIds: string[], timeoutMs = 60_000, ready: (jobId: string) => Promise<boolean> = async () => true): Promise<{ pid: number; jobId: string }> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const rows = await q<{ locked_by: string; payload_json: string }>("select locked_by, payload_json from platform_jobs where name = $1 and state = 'active'", [queue]);
    for (const r of rows) {
      const jobId = (JSON.parse(r.payload_json) as { jobId: string }).jobId;
      if (jobIds.includes(jobId) && (await ready(jobId))) return { pid: Number(r.locked_by.split(':')[1]), jobId };
    }
    if (Date.now() > end) throw new Error(`no active ${queue} job`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface JobState { status: string; progress: number; transfer: string | undefined; queueState: string | undefined; lockedBy: string | undefined }
async function jobState(jobId: string): Promise<JobState> {
  const [j] = await q<{ status: string; progress: number; tasks_json: string }>('select status, progress, tasks_json from recovery_jobs where id = $1', [jobId]);
  const [pj] = await q<{ state: string; locked_by: string | null }>("select state, locked_by from platform_jobs where name = 'recovery.backup' and payload_json like $1", [`%${jobId}%`]);
  const transfer = (JSON.parse(j!.tasks_json) as { taskId: string; status: string }[]).find((t) => t.taskId === 'Transfer data to vault')?.status;
  return { status: j!.status, progress: Number(j!.progress), transfer, queueState: pj?.state, lockedBy: pj?.locked_by ?? undefined };
}

beforeAll(async () => {
  [azurite, cluster] = await Promise.all([startAzurite(), startPostgres()]);
  env = { ...baseEnv, RSVAULT_QUEUE_LEASE_MS: '3000', RSVAULT_CHUNK_STORE: 'blob', RSVAULT_BLOB_URL: azurite.url, RSVAULT_BLOB_CONTAINER: CONTAINER, RSVAULT_BLOB_ACCOUNT_KEY: AZURITE_KEY };
  dbUrl = await cluster.createDatabase('rsvault_scale');
  dataDir = mkdtempSync(path.join(os.tmpdir(), 'rsvault-scale-'));
  apiS = await startRole('api'); // first: it creates the installation (CA, keys, credentials)
  workers.push(await startRole('worker'), await startRole('worker'));
  sched = await startRole('scheduler');
  f = new CoreFlow(apiS, 'rg-so');
  await f.protectedEncryptedVms(KV, RSV, VMS, SIZE);
  // DefaultPolicy runs daily at 19:00 UTC: move it 12 hours away, so the scheduler fires no backup of these VMs while
  // the test's own backups run (a scheduled one would make an on-demand backup of the same VM a 409).
  const runTime = `2020-01-01T${String((new Date().getUTCHours() + 12) % 24).padStart(2, '0')}:00:00Z`;
  await f.c.request('PUT', `${f.vaultPath(RSV)}/backupPolicies/DefaultPolicy`, {
    query: { 'api-version': BK_API },
    body: { properties: { backupManagementType: 'AzureIaasVM', schedulePolicy: { schedulePolicyType: 'SimpleSchedulePolicy', scheduleRunFrequency: 'Daily', scheduleRunTimes: [runTime] }, retentionPolicy: { retentionPolicyType: 'LongTermRetentionPolicy', dailySchedule: { retentionTimes: [runTime], retentionDuration: { count: 7, durationType: 'Days' } } } } },
  });
  await f.storageAccount(SA);
}, 300_000);

afterAll(async () => {
  for (const s of [apiS, ...workers, sched]) await s?.stop().catch(() => undefined);
  await Promise.all([cluster?.stop(), azurite?.stop()]);
  if (f) rmSync(f.tmp, { recursive: true, force: true });
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('scale-out: api + 2 workers + scheduler on PostgreSQL, chunks in Azure Blob (Azurite)', () => {
  it('each process reports its roles and a reachable database and queue on /healthz', async () => {
    const health = async (s: TestServer) => JSON.parse((await get(s, `${s.origin}/healthz`)).body.toString()) as { status: string; roles: string[]; db: { dialect: string; ok: boolean }; queue: { ok: boolean; working: boolean } };
    expect(await health(apiS)).toMatchObject({ status: 'ok', roles: ['api'], db: { dialect: 'postgres', ok: true }, queue: { ok: true, working: false } });
    expect(await health(workers[0]!)).toMatchObject({ status: 'ok', roles: ['worker'], db: { dialect: 'postgres', ok: true }, queue: { ok: true, working: true } });
    expect(await health(sched)).toMatchObject({ status: 'ok', roles: ['scheduler'], queue: { working: false } });
    // A worker serves no ARM API.
    expect((await get(workers[0]!, `${workers[0]!.origin}/subscriptions?api-version=2020-01-01`)).status).toBe(404);
  });

  it('ten concurrent backups of ten VMs; one worker SIGKILLed mid-backup; every job ends Completed or Failed with a code; every point restores byte-identical; the chunks are in Azurite; the vault verifies', async () => {
    const images = new Map<string, Buffer>();
    for (const vm of VMS) images.set(vm, await f.imageBytes(vm));
    const jobIds = await Promise.all(VMS.map((vm) => f.startBackup(RSV, vm)));
    expect(new Set(jobIds).size).toBe(VMS.length);

    // Freeze the worker holding a backup that is transferring data, check that the backup is still running (its
    // recovery point not committed, its queue job held by that worker), then kill it. A backup that committed in the
    // meantime is let go (SIGCONT) and another one is picked.
    let victim: { pid: number; jobId: string; at: JobState } | undefined;
    for (let tries = 0; !victim && tries < 20; tries++) {
      const h = await holderOf('recovery.backup', jobIds, 120_000, async (id) => (await jobState(id)).transfer === 'InProgress');
      process.kill(h.pid, 'SIGSTOP');
      const at = await jobState(h.jobId);
      if (at.status === 'InProgress' && at.queueState === 'active' && at.lockedBy?.split(':')[1] === String(h.pid)) {
        victim = { ...h, at };
        process.kill(h.pid, 'SIGKILL');
      } else {
        process.kill(h.pid, 'SIGCONT');
      }
    }
    expect(victim, 'a worker was killed while it ran a backup').toBeDefined();
    const w = workers.find((x) => x.proc.pid === victim!.pid)!;
    expect(w, `pid ${victim!.pid} is one of the workers`).toBeDefined();
    await kill(w);
    // At the kill: InProgress, its data transfer under way, no recovery point for it.
    expect(victim!.at).toMatchObject({ status: 'InProgress', transfer: 'InProgress', queueState: 'active' });
    expect(await q('select id from recovery_points where job_id = $1', [victim!.jobId])).toEqual([]);

    const jobs: Job[] = [];
    for (const id of jobIds) jobs.push(await f.waitJob(RSV, id, 240_000));
    for (const j of jobs) {
      expect(['Completed', 'Failed']).toContain(j.properties.status);
      if (j.properties.status === 'Failed') {
        expect(j.properties.errorDetails[0]?.errorTitle, JSON.stringify(j.properties.errorDetails)).toBeTruthy();
        expect(j.properties.errorDetails[0]?.errorCode, JSON.stringify(j.properties.errorDetails)).toBeGreaterThan(0);
      }
    }
    // The killed worker's backup was taken over by the other worker (its lease expired) and completed.
    const taken = jobs.find((j) => j.name === victim!.jobId)!;
    expect(taken.properties.status, JSON.stringify(taken.properties.errorDetails)).toBe('Completed');
    const attempts = await q<{ attempt: number }>("select attempt from platform_jobs where name = 'recovery.backup' and payload_json like $1", [`%${victim!.jobId}%`]);
    expect(attempts[0]!.attempt).toBeGreaterThanOrEqual(2);
    const completed = jobs.filter((j) => j.properties.status === 'Completed');
    expect(completed.length).toBeGreaterThanOrEqual(VMS.length - 1);

    // The chunks are blobs in Azurite (listed with the Azure SDK); the vault's local directory holds no chunk file.
    const [{ uid }] = await q<{ uid: string }>('select uid from recovery_vaults where name = $1', [RSV]) as [{ uid: string }];
    const container = new BlobServiceClient(azurite.url, new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY)).getContainerClient(CONTAINER);
    const blobs: string[] = [];
    for await (const b of container.listBlobsFlat({ prefix: `vaults/${uid}/` })) blobs.push(b.name);
    const chunkBlobs = blobs.filter((n) => /^vaults\/[^/]+\/chunks\/[0-9a-f]{64}$/.test(n));
    expect(chunkBlobs.length).toBeGreaterThanOrEqual(completed.length * (SIZE / (64 * 1024)) * 0.9); // random data: one chunk per ~64 KiB
    for (const j of completed) {
      const rp = j.properties.extendedInfo.propertyBag['Recovery Point Id']!;
      expect(blobs).toEqual(expect.arrayContaining([`vaults/${uid}/meta/manifests/${rp}/os.manifest`, `vaults/${uid}/meta/manifests/${rp}/index`]));
    }
    const localFiles = readdirSync(path.join(dataDir, 'vaults', uid), { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
    expect(localFiles.filter((e) => /^[0-9a-f]{64}$/.test(e.name)).map((e) => path.join(e.parentPath, e.name))).toEqual([]);
    expect(existsSync(path.join(dataDir, 'vaults', uid, 'store'))).toBe(false);
    // The manifests and index files written to the vault's local directory are copies: without them (a worker on
    // another machine never had them), restores and verify read the store's.
    rmSync(path.join(dataDir, 'vaults', uid, 'manifests'), { recursive: true, force: true });

    // Every recovery point restores (on the surviving worker) byte-identical to the image at backup time.
    const restores = await Promise.all(VMS.map(async (vm, i) => {
      const j = jobs[i]!;
      if (j.properties.status !== 'Completed') return undefined;
      const rp = j.properties.extendedInfo.propertyBag['Recovery Point Id']!;
      return { vm, r: await f.waitJob(RSV, await f.restoreToAccount(RSV, vm, rp, SA), 240_000) };
    }));
    for (const x of restores) {
      if (!x) continue;
      expect(x.r.properties.status, JSON.stringify(x.r.properties.errorDetails)).toBe('Completed');
      expect(f.restoredOsDisk(x.r, SA).equals(images.get(x.vm)!), `${x.vm} restored byte-identical`).toBe(true);
    }

    // The product's Verify job: every recovery point's manifests authenticate and every chunk hashes back to its id.
    const res = await apiS.client.send('POST', `${f.vaultPath(RSV)}/verify`, { query: { 'api-version': BK_API } });
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    const v = await f.waitJob(RSV, (await f.opStatus(res)).properties!.jobId, 240_000);
    expect(v.properties.status, JSON.stringify(v.properties.errorDetails)).toBe('Completed');
    const bag = v.properties.extendedInfo.propertyBag;
    const points = (await q<{ n: string }>('select count(*) as n from recovery_points where vault_norm = (select id_norm from recovery_vaults where name = $1)', [RSV]))[0]!.n;
    expect(Number(points)).toBeGreaterThanOrEqual(completed.length);
    expect(bag).toMatchObject({ 'Recovery Points Checked': String(points), 'Disks Checked': String(points), 'Damaged Disks': '0', 'Damaged Chunks': '0', 'Tampered Manifests': '0', 'Unauthenticated Manifests': '0' });
    expect(Number(bag['Chunks Checked'])).toBeGreaterThanOrEqual(Number(points) * (SIZE / (64 * 1024)));

    // Metrics of the surviving worker count the outcomes; the queue depth is reported.
    const alive = workers.find((x) => x !== w)!;
    const metrics = (await get(alive, `${alive.origin}/metrics`)).body.toString();
    expect(metrics).toMatch(/rsvault_job_outcomes_total\{queue="recovery.backup",outcome="completed"\} [1-9]/);
    expect(metrics).toMatch(/rsvault_job_outcomes_total\{queue="recovery.backup",outcome="lease_expired"\} [1-9]/);
    expect(metrics).toMatch(/# TYPE rsvault_queue_jobs gauge/);
  }, 300_000);

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
