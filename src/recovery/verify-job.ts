/**
 * Verify and recatalog of a vault (issue #12 items 5c and 6).
 *
 * Verify (a `Verify` job per vault; on demand by `POST …/vaults/{v}/verify`, and scheduled, weekly by default):
 * every disk of every recovery point — its manifest authenticates (version 2) against the point, item and disk, and
 * every chunk opens under its id and hashes back to it (engine `verifyManifest`). A chunk that fails its check is
 * quarantined (engine `quarantineChunk`: moved out of the store's namespace), so the next backup of the same data
 * stores it again — healing every recovery point that references it, ids being content-addressed. The job fails
 * with the recovery points, disks and byte ranges lost; tampered manifests fail it with
 * `UserErrorRecoveryPointTampered`; old (version 1) manifests make it `CompletedWithWarnings`.
 *
 * Concurrency (engine README matrix): verify only reads, besides the quarantine rename. A recovery point pruned while
 * verify runs is skipped (its row is re-read before a problem is reported: GC may have swept its chunks). A backup
 * that touched a chunk just before it was quarantined commits a manifest referencing a missing chunk; the next
 * backup of the same data stores it again, and the next verify reports it until then. GC counts a Verify job as
 * running (its cutoff is the start of the oldest running job of the vault).
 *
 * Recatalog: rebuilds recovery point rows (and missing item rows, as protection stopped) from the authenticated
 * index files of the vault — the chunk store's `manifests/` metadata objects and the vault directory's `manifests/`
 * (integrity.ts `listPointDirs` / `readPointFile`), so a lost local directory or a node that never held it recovers
 * them from the store; points whose index or manifests do not authenticate are skipped and reported.
 */
import { randomUUID } from 'node:crypto';
import { ChunkStoreError, isNotFound, quarantineChunk, verifyManifest, type ChunkProblem, type Manifest } from '../engine/index.js';
import type { JobContext, ScheduleSource } from '../platform/jobs/index.js';
import { ArmError } from '../platform/http/errors.js';
import { RecoveryError } from './errors.js';
import { listPointDirs, readPointIndex, readPointManifest, type PointIndex, type PointSource } from './integrity.js';
import { QUEUE_VERIFY, QUEUE_VERIFY_SCHEDULED, uuidFrom, type JobError, type JobRow, type JobTask, type PointRow, type RecoveryService, type VaultRow } from './service.js';
import type { DiskRecord } from './backup.js';

export { QUEUE_VERIFY, QUEUE_VERIFY_SCHEDULED };
/** Default schedule of the vault verify: Sundays 03:00 UTC (croner, with seconds). */
export const DEFAULT_VERIFY_CRON = '0 0 3 * * 0';
const TASK_VERIFY = 'Verify recovery points';
const MAX_LISTED = 50;

const fmtRange = (offset: number, len: number) => `${offset}-${offset + len - 1}`;

interface Lost {
  rp: string;
  vm: string;
  disk: string;
  slot: string;
  problems: Array<ChunkProblem & { length: number }>;
  digestMismatch: boolean;
}

export interface RecatalogReport {
  recovered: Array<{ recoveryPointId: string; item: string; time: string }>;
  itemsCreated: string[];
  skipped: Array<{ name: string; reason: string }>;
}

export class VaultIntegrity {
  constructor(private readonly s: RecoveryService) {}

  private async runningVerify(v: VaultRow): Promise<JobRow | undefined> {
    return this.s.db.selectFrom('recovery_jobs').selectAll().where('vault_norm', '=', v.id_norm).where('operation', '=', 'Verify').where('status', 'in', ['InProgress', 'Cancelling']).executeTakeFirst();
  }

  private async createJob(v: VaultRow, userTriggered: boolean, triggerKey?: string): Promise<JobRow> {
    const id = triggerKey ? uuidFrom(triggerKey) : randomUUID();
    const row: JobRow = {
      id, vault_norm: v.id_norm, item_norm: null, op_id: null, trigger_key: triggerKey ?? null, operation: 'Verify', status: 'InProgress', friendly_name: v.name, container_name: '',
      user_triggered: userTriggered ? 1 : 0, start_time: Date.now(), end_time: null, error_json: null, tasks_json: JSON.stringify([{ taskId: TASK_VERIFY, status: 'NotStarted' }]),
      bag_json: JSON.stringify({ 'Vault Name': v.name }), params_json: '{}', progress: 0, cancel_requested: 0,
    };
    await this.s.db.insertInto('recovery_jobs').values(row).onConflict((oc) => oc.column('trigger_key').doNothing()).execute();
    return (await this.s.getJob(id))!;
  }

  /** POST …/verify: one Verify job per vault at a time (a second request gets the running one). Returns the operation id. */
  async beginVerify(v: VaultRow): Promise<string> {
    const running = await this.runningVerify(v);
    const job = running ?? (await this.createJob(v, true));
    if (!running) await this.s.d.queue.send(QUEUE_VERIFY, { jobId: job.id }, { uniqueKey: `verify:${job.id}`, retryLimit: 1 });
    return this.s.d.ops.start('Microsoft.RecoveryServices/vaults/backupVerify/action', v.id, async (opId) => {
      if (!running) await this.s.updateJob(job.id, { op_id: opId });
      return { jobId: job.id };
    });
  }

  /** The scheduled verify of every vault (`cron` croner pattern, UTC). */
  scheduleSource(cron: string): ScheduleSource {
    return {
      name: 'recovery-verify',
      queue: QUEUE_VERIFY_SCHEDULED,
      entries: async () => (await this.s.db.selectFrom('recovery_vaults').select('id_norm').execute()).map((r) => ({ key: r.id_norm, cron })),
    };
  }

  /** Queue handler of a scheduled slot: creates (idempotently, one per slot) the vault's Verify job and enqueues it. */
  async scheduled(payload: { key: string; slot: string }): Promise<void> {
    const v = await this.s.vaultByNorm(payload.key);
    if (!v || (await this.runningVerify(v))) return;
    const job = await this.createJob(v, false, `verify:${v.id_norm}:${payload.slot}`);
    if (job.status === 'InProgress') await this.s.d.queue.send(QUEUE_VERIFY, { jobId: job.id }, { uniqueKey: `verify:${job.id}`, retryLimit: 1 });
  }

  private async pointExists(id: string): Promise<boolean> {
    return !!(await this.s.db.selectFrom('recovery_points').select('id').where('id', '=', id).executeTakeFirst());
  }

  /** Queue handler of a Verify job. */
  async runVerify(ctx: JobContext<{ jobId: string }>): Promise<void> {
    const s = this.s;
    const job = await s.getJob(ctx.payload.jobId);
    if (!job || job.status !== 'InProgress') return;
    const v = await s.vaultByNorm(job.vault_norm);
    if (!v) return s.finishJob(job.id, 'Failed', new RecoveryError(404, 'ResourceNotFound', 'The vault was deleted while its verify job was queued.'));
    const started = Date.now();
    const task = (patch: Partial<JobTask>): string => JSON.stringify([{ taskId: TASK_VERIFY, status: 'InProgress', startTime: started, ...patch }]);
    await s.updateJob(job.id, { tasks_json: task({ progressPercentage: 0 }) });
    try {
      const { store, keys, dir } = await s.vaultStore(v);
      const points = await s.db.selectFrom('recovery_points').selectAll().where('vault_norm', '=', v.id_norm).orderBy('time').execute();
      const items = new Map((await s.listItems(v)).map((i) => [i.id_norm, i.vm_name]));
      const total = points.reduce((a, p) => a + (JSON.parse(p.disks_json) as DiskRecord[]).reduce((b, d) => b + d.sizeBytes, 0), 0);
      let doneBefore = 0;
      let last = 0;
      let chunks = 0;
      let disksChecked = 0;
      const lost: Lost[] = [];
      const tampered: string[] = [];
      const unauthenticated: string[] = [];
      const damaged = new Set<string>();
      for (const rp of points) {
        for (const d of JSON.parse(rp.disks_json) as DiskRecord[]) {
          ctx.signal.throwIfAborted();
          const where = `recovery point ${rp.id} (VM ${items.get(rp.item_norm) ?? rp.item_norm}), disk '${d.name}' (${d.os ? 'os' : `lun ${d.lun}`})`;
          let m: Manifest;
          try {
            m = await readPointManifest({ store, dir }, keys, rp, d);
          } catch (e) {
            if (await this.pointExists(rp.id)) tampered.push(`${where}: ${(e as Error).message}`);
            doneBefore += d.sizeBytes;
            continue;
          }
          if (!m.authenticated) unauthenticated.push(where);
          const report = await verifyManifest({
            store, keys, manifest: m, signal: ctx.signal,
            onProgress: (p) => {
              void ctx.heartbeat().catch(() => undefined);
              const now = Date.now();
              if (now - last < 500) return;
              last = now;
              const pct = total ? Math.min(99, Math.floor(((doneBefore + p.bytesDone) / total) * 100)) : 0;
              void s.updateJob(job.id, { progress: pct, tasks_json: task({ progressPercentage: pct }) }).catch(() => undefined);
            },
          });
          doneBefore += d.sizeBytes;
          disksChecked++;
          chunks += report.chunksChecked;
          if (report.ok) continue;
          if (!(await this.pointExists(rp.id))) continue; // pruned meanwhile: GC may have swept its chunks
          for (const p of report.problems) if (p.code === 'UserErrorChunkCorrupted') damaged.add(p.chunkId);
          lost.push({ rp: rp.id, vm: items.get(rp.item_norm) ?? rp.item_norm, disk: d.name, slot: d.os ? 'os' : `lun ${d.lun}`, problems: report.problems.map((p) => ({ ...p, length: m.lengthOf(p.chunkIndex) })), digestMismatch: report.imageDigest === 'mismatch' });
        }
      }
      let quarantined = 0;
      for (const id of damaged) if ((await quarantineChunk(store, id)) !== 'absent') quarantined++;

      const errors: JobError[] = [];
      if (tampered.length) {
        errors.push({
          errorCode: 400324, errorTitle: 'UserErrorRecoveryPointTampered',
          errorString: `Verify found ${tampered.length} manifest(s) that fail their integrity check; these recovery points cannot be restored: ${tampered.slice(0, MAX_LISTED).join('; ')}${tampered.length > MAX_LISTED ? `; and ${tampered.length - MAX_LISTED} more` : ''}.`,
          recommendations: ['Restore other recovery points of these VMs; check who can write the vault directory; run a backup of the affected VMs to create a sound recovery point.'],
        });
      }
      if (lost.length) {
        const lines = lost.map((l) => `recovery point ${l.rp} (VM ${l.vm}), disk '${l.disk}' (${l.slot}): ${l.problems.map((p) => `bytes ${fmtRange(p.offset, p.length)} (${p.code === 'UserErrorChunkMissing' ? 'chunk missing' : 'chunk corrupted'}, chunk ${p.chunkIndex})`).join(', ')}${l.digestMismatch ? ' (whole-image digest mismatch)' : ''}`);
        errors.push({
          errorCode: 400325, errorTitle: 'UserErrorVerifyFoundDamagedData',
          errorString: `Verify found damaged data in ${lost.length} disk(s) of recovery points; these byte ranges cannot be restored: ${lines.slice(0, MAX_LISTED).join('; ')}${lines.length > MAX_LISTED ? `; and ${lines.length - MAX_LISTED} more` : ''}. ${quarantined} damaged chunk(s) were quarantined.`,
          recommendations: ['Run a backup of the affected VMs now (rsvault backup protection backup-now): a quarantined chunk whose data is still on the VM is stored again, which repairs every recovery point that uses it. Then run rsvault backup vault verify again.'],
        });
      }
      if (!errors.length && unauthenticated.length) {
        errors.push({
          errorCode: 400326, errorTitle: 'UserErrorVerifyFoundUnauthenticatedManifests',
          errorString: `${unauthenticated.length} manifest(s) were written before manifests were authenticated (format version 1): their data checked out, but a swapped or rolled-back file would not be detected: ${unauthenticated.slice(0, MAX_LISTED).join('; ')}.`,
          recommendations: ['New backups write authenticated manifests; these recovery points stay readable until they expire.'],
        });
      }
      const status = errors.some((e) => e.errorCode !== 400326) ? 'Failed' : errors.length ? 'CompletedWithWarnings' : 'Completed';
      const bag = {
        ...JSON.parse(job.bag_json) as Record<string, string>,
        'Recovery Points Checked': String(points.length), 'Disks Checked': String(disksChecked), 'Chunks Checked': String(chunks),
        'Damaged Disks': String(lost.length), 'Damaged Chunks': String(damaged.size), 'Quarantined Chunks': String(quarantined),
        'Tampered Manifests': String(tampered.length), 'Unauthenticated Manifests': String(unauthenticated.length),
      };
      const t = Date.now();
      await s.updateJob(job.id, {
        status, end_time: t, progress: status === 'Failed' ? (total ? Math.floor((doneBefore / total) * 100) : 100) : 100, bag_json: JSON.stringify(bag),
        tasks_json: task({ status: status === 'Failed' ? 'Failed' : 'Completed', endTime: t, progressPercentage: 100 }), error_json: errors.length ? JSON.stringify(errors) : null,
      });
      if (errors.length) s.d.log.warn({ vault: v.name, tampered: tampered.length, damagedDisks: lost.length, quarantined }, 'vault verify found problems');
    } catch (e) {
      if (ctx.signal.aborted) throw e; // shutting down / lease lost: the queue runs it again
      await s.finishJob(job.id, 'Failed', e instanceof ArmError ? e : { errorCode: 500004, errorString: `Verify failed: ${(e as Error)?.message ?? String(e)}. Nothing was changed.`, errorTitle: 'VerifyFailed', recommendations: ['Retry: rsvault backup vault verify; if it keeps failing, check the server log.'] });
    }
  }

  /** A Verify job whose worker died for good. */
  async deadVerify(jobId: string, error: string): Promise<void> {
    const j = await this.s.getJob(jobId);
    if (!j || j.status !== 'InProgress') return;
    await this.s.finishJob(jobId, 'Failed', { errorCode: 500004, errorString: `Verify failed: ${error}.`, errorTitle: 'VerifyFailed', recommendations: ['Retry: rsvault backup vault verify.'] });
  }

  // ---- recatalog --------------------------------------------------------------------------------------------------
  /** Rebuilds the rows of recovery points found on disk (authenticated index + manifests) that have no row. */
  async recatalog(v: VaultRow): Promise<RecatalogReport> {
    const s = this.s;
    const { store, keys, dir } = await s.vaultStore(v);
    const report: RecatalogReport = { recovered: [], itemsCreated: [], skipped: [] };
    const have = new Set((await s.db.selectFrom('recovery_points').select('id').where('vault_norm', '=', v.id_norm).execute()).map((r) => r.id));
    const found: PointIndex[] = [];
    for (const name of await listPointDirs({ store, dir })) {
      if (have.has(name)) continue;
      let idx: PointIndex;
      try {
        idx = await readPointIndex({ store, dir }, keys, name, { local: false }); // the store's copy decides (integrity.ts)
      } catch (err) {
        const reason = isNotFound(err) ? 'no index file in the vault\'s chunk store (a backup that did not finish, a recovery point deleted through another node, or one written before index files existed)'
          : err instanceof ChunkStoreError ? `the chunk store could not be read: ${err.message}` : `the index does not authenticate: ${(err as Error).message}`;
        report.skipped.push({ name, reason });
        continue;
      }
      if (idx.vault !== v.id_norm || !idx.item.idNorm.startsWith(`${v.id_norm}|`)) {
        report.skipped.push({ name, reason: 'the index names another vault' });
        continue;
      }
      const bad = await this.checkManifests({ store, dir }, keys, idx);
      if (bad) {
        report.skipped.push({ name, reason: bad });
        continue;
      }
      if (await this.pointExists(idx.recoveryPointId)) {
        report.skipped.push({ name, reason: 'a recovery point with this id exists in another vault' });
        continue;
      }
      found.push(idx);
    }
    found.sort((a, b) => a.time - b.time);
    for (const idx of found) {
      const created = await s.db.transaction().execute(async (tx) => {
        let item = await tx.selectFrom('recovery_items').selectAll().where('id_norm', '=', idx.item.idNorm).executeTakeFirst();
        let made = false;
        if (!item) {
          const t = Date.now();
          await tx.insertInto('recovery_items').values({
            id_norm: idx.item.idNorm, vault_norm: v.id_norm, vm_id: idx.item.vmId, vm_rg: idx.item.vmRg, vm_name: idx.item.vmName, classic: idx.item.classic,
            policy_name: null, protection_state: 'ProtectionStopped', last_backup_status: 'Completed', last_backup_time: idx.time, last_rp_id: null, health_json: null, extended_json: '{}',
            deferred_delete_at: null, created_at: t, updated_at: t,
          }).execute();
          item = (await tx.selectFrom('recovery_items').selectAll().where('id_norm', '=', idx.item.idNorm).executeTakeFirst())!;
          made = true;
        }
        const jobTaken = await tx.selectFrom('recovery_points').select('id').where('job_id', '=', idx.jobId).executeTakeFirst();
        const row: PointRow = {
          id: idx.recoveryPointId, vault_norm: v.id_norm, item_norm: idx.item.idNorm, job_id: jobTaken ? `recatalog-${idx.recoveryPointId}` : idx.jobId, time: idx.time, expiry: idx.expiry,
          rule: idx.rule, rp_type: idx.rpType, disks_json: JSON.stringify(idx.disks), vm_json: JSON.stringify(idx.vm), encrypted: idx.encrypted, keys_sealed: idx.keysSealed,
          encryption_mechanism: idx.encryptionMechanism, size_bytes: idx.sizeBytes, created_at: Date.now(),
        };
        await tx.insertInto('recovery_points').values(row).execute();
        const cur = item.last_rp_id ? await tx.selectFrom('recovery_points').select('time').where('id', '=', item.last_rp_id).executeTakeFirst() : undefined;
        if (!cur || Number(cur.time) < idx.time) {
          await tx.updateTable('recovery_items').set({ last_rp_id: idx.recoveryPointId, protection_state: item.protection_state === 'IRPending' ? 'Protected' : item.protection_state, updated_at: Date.now() }).where('id_norm', '=', item.id_norm).execute();
        }
        return made;
      });
      if (created) report.itemsCreated.push(idx.item.vmName);
      report.recovered.push({ recoveryPointId: idx.recoveryPointId, item: idx.item.vmName, time: new Date(idx.time).toISOString() });
    }
    if (report.recovered.length) s.d.log.warn({ vault: v.name, recovered: report.recovered.length, skipped: report.skipped.length }, "recovery points recatalogued from the vault's index files");
    return report;
  }

  private async checkManifests(src: PointSource, keys: Parameters<typeof readPointManifest>[1], idx: PointIndex): Promise<string | undefined> {
    for (const d of idx.disks) {
      try {
        await readPointManifest(src, keys, { id: idx.recoveryPointId, item_norm: idx.item.idNorm }, d);
      } catch (e) {
        return (e as Error).message;
      }
    }
    return undefined;
  }
}
