/**
 * Protection and the data path: configure / stop / delete / resume protection, backup jobs (Take Snapshot →
 * Transfer data to vault → commit), scheduled backups, retention pruning and GC.
 *
 * A backup job step list is idempotent: a job re-run after a crash finds its recovery point row (done) or starts
 * over (chunks already stored are reused). Commit order: chunks durable (engine) → manifests durable → the recovery
 * point row in one transaction with the item and job updates. A recovery point exists iff its row exists.
 */
import { rm, readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import {
  backupImage, collectGarbage, createSnapshot, ChangedBlockBitmap, writeManifestFile, MIN_CHUNK_SIZE, DEFAULT_CHUNK_SIZE,
  type ChunkStore, type Manifest, type Snapshot,
} from '../engine/index.js';
import { INDEX_FILE, allocatePointId, diskSlot, listPointDirs, manifestMac, readPointIndex, readPointManifest, writePointIndex } from './integrity.js';
import type { JobContext } from '../platform/jobs/index.js';
import type { Caller } from '../platform/auth/index.js';
import { protectNeeds, requireAccess } from './access.js';
import { KeyVaultError, parseObjectUrl } from '../keyvault/index.js';
import { ArmError } from '../platform/http/errors.js';
import { scheduledExpiry, type IaasVmPolicy } from './policy.js';
import { RecoveryError, recoveryErrors } from './errors.js';
import { itemName } from './model.js';
import {
  QUEUE_BACKUP, QUEUE_RESTORE, QUEUE_VERIFY, refOfItem, softDeleteMs, itemKey, jobErrorOf,
  type ItemRow, type JobRow, type JobTask, type PointRow, type RecoveryService, type VaultRow, type VmPlan,
} from './service.js';
import type { VmRef } from './model.js';

const TASK_SNAPSHOT = 'Take Snapshot';
/** How often a running backup looks for a cancel request made through another process. */
const CANCEL_POLL_MS = 1000;
const TASK_TRANSFER = 'Transfer data to vault';

export interface DiskRecord {
  diskId: string;
  name: string;
  lun?: number | undefined;
  os: boolean;
  sizeBytes: number;
  manifest: string;
  chunkSize: number;
  /** The manifest's MAC (hex; manifest format version 2): pins the exact file. Absent for older recovery points. */
  mac?: string | undefined;
}

/** Chunk size for a disk: ~1/1024 of it, a power of two between 64 KiB and 4 MiB (stays fixed per disk). */
export function chunkSizeFor(diskSize: number): number {
  let c = MIN_CHUNK_SIZE;
  while (c < DEFAULT_CHUNK_SIZE && c * 1024 < diskSize) c *= 2;
  return c;
}

const mb = (b: number) => `${Math.max(0, Math.round(b / (1024 * 1024)))} MB`;

/** Engine snapshot side files of an image: `{image}.snap-{12 hex}` (reflink clone) and `….cow` (copy-on-write side file). */
const snapshotFileOf = (image: string, name: string): boolean => {
  const base = path.basename(image);
  return name.startsWith(`${base}.snap-`) && /^[0-9a-f]{12}(\.cow)?$/.test(name.slice(base.length + 6));
};

/**
 * Copies a recovery point's manifests and index file (written under the vault's directory) into the vault's chunk
 * store as metadata objects `manifests/<rp>/<file>`, so an object store (and a GeoRedundant vault's secondary)
 * holds everything a restore needs next to the chunks (integrity.ts: readers take the store's copy first). The
 * embedded fs store keeps its metadata in the vault's directory itself: identical bytes already there are not
 * rewritten. The index goes last: an index in the store means the point's manifests are there too.
 */
async function mirrorPoint(store: ChunkStore, rpDir: string, rpId: string): Promise<void> {
  const names = (await readdir(rpDir)).filter((n) => !n.startsWith('.')).sort((a, b) => Number(a === INDEX_FILE) - Number(b === INDEX_FILE));
  for (const name of names) {
    const data = await readFile(path.join(rpDir, name));
    const meta = `manifests/${rpId}/${name}`;
    const there = await store.getMeta(meta).catch(() => undefined);
    if (!there?.equals(data)) await store.putMeta(meta, data);
  }
}

export class Protection {
  /** Images with a live snapshot in this process (count per resolved path): their side files are never stale. */
  private readonly snapping = new Map<string, number>();

  constructor(private readonly s: RecoveryService) {}

  /** Removes snapshot side files of `images` that no snapshot of this process holds. Returns how many. */
  async removeStaleSnapshots(images: string[]): Promise<number> {
    let n = 0;
    for (const image of new Set(images.map((i) => path.resolve(i)))) {
      if (this.snapping.has(image)) continue;
      for (const name of await readdir(path.dirname(image)).catch(() => [] as string[])) {
        if (!snapshotFileOf(image, name)) continue;
        await rm(path.join(path.dirname(image), name), { force: true });
        n++;
      }
    }
    return n;
  }

  /** Images of the disks a VM has now (none when it is gone). */
  private async imagesOfVm(vmId: string): Promise<string[]> {
    const compute = this.s.d.compute;
    const vm = await compute.getVm(vmId);
    if (!vm) return [];
    const out: string[] = [];
    for (const d of compute.vmDisks(vm)) {
      const disk = await compute.getDisk(d.diskId);
      if (disk) out.push(disk.imagePath);
    }
    return out;
  }

  /**
   * Start-up (worker role): removes the snapshot side files a crash left next to disk images. Disks of VMs with a
   * Backup job still InProgress are skipped (another worker may run it); that job removes its disks' stale side
   * files when it runs again (runBackup), or when it is given up (deadBackup).
   */
  async cleanStaleSnapshots(): Promise<number> {
    const s = this.s;
    const busy = await s.db
      .selectFrom('recovery_jobs')
      .innerJoin('recovery_items', 'recovery_items.id_norm', 'recovery_jobs.item_norm')
      .select('recovery_items.vm_id')
      .where('recovery_jobs.operation', '=', 'Backup')
      .where('recovery_jobs.status', 'in', ['InProgress', 'Cancelling'])
      .execute();
    const skip = new Set<string>();
    for (const b of busy) for (const i of await this.imagesOfVm(b.vm_id)) skip.add(path.resolve(i));
    const images = (await s.d.compute.allDisks()).map((d) => path.resolve(d.imagePath)).filter((i) => !skip.has(i));
    return this.removeStaleSnapshots(images);
  }

  // ---- configure / change policy / resume / stop -----------------------------------------------------------------
  /**
   * PUT protectedItems: returns at once; the work (a ConfigureBackup job with the preflight) runs in the async
   * operation, whose status carries the job id. Enabling, changing or resuming protection needs write and read on the
   * VM itself (access.ts), not only on the vault; stopping protection needs only the vault's action (as in Azure).
   */
  async beginConfigure(v: VaultRow, ref: VmRef, b: { sourceResourceId?: string | undefined; policyId?: string | undefined; protectionState?: string | undefined; isRehydrate?: boolean | undefined; diskExclusion?: boolean | undefined; extendedProperties?: unknown }, caller: Caller): Promise<string> {
    const existing = await this.s.getItem(v, ref);
    const stop = b.protectionState !== undefined && b.protectionState.toLowerCase() === 'protectionstopped' && !b.isRehydrate;
    const stopByEmptyPolicy = existing && b.policyId === '' && !b.isRehydrate;
    const vmId = b.sourceResourceId ?? existing?.vm_id;
    if (!vmId) throw new ArmError(400, 'BMSUserErrorInvalidInput', 'properties.sourceResourceId is required to enable protection: the ARM id of the virtual machine.', { target: 'properties.sourceResourceId' });
    const vmRef = parseVmId(vmId);
    if (!vmRef || vmRef.vmName.toLowerCase() !== ref.vmName.toLowerCase() || vmRef.resourceGroup.toLowerCase() !== ref.resourceGroup.toLowerCase()) {
      throw new ArmError(400, 'BMSUserErrorInvalidInput', `properties.sourceResourceId '${vmId}' does not match the protected item name '${itemName(ref)}'.`, { target: 'properties.sourceResourceId' });
    }
    if (!(stop || stopByEmptyPolicy)) {
      await requireAccess(this.s.d.identity, caller, protectNeeds(vmId));
      // Refused at once (409), before any job: the preflight of the job checks it again.
      await this.s.requireNotProtectedElsewhere(v, vmId);
    }
    if (stop || stopByEmptyPolicy) {
      if (!existing) throw recoveryErrors.itemNotFound(itemName(ref));
      return this.s.d.ops.start('Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/write', this.s.itemId(v, ref), async (opId) => {
        const job = await this.s.createJob({ vault: v, item: existing, ref, operation: 'DisableBackup', opId, userTriggered: true });
        await this.s.db.updateTable('recovery_items').set({ policy_name: null, protection_state: 'ProtectionStopped', updated_at: Date.now() }).where('id_norm', '=', existing.id_norm).execute();
        await this.s.finishJob(job.id, 'Completed');
        return { jobId: job.id };
      });
    }
    if (b.isRehydrate && existing && existing.deferred_delete_at !== null && !b.policyId) {
      // Undelete: the item comes back, stopped, with its recovery points.
      return this.s.d.ops.start('Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/write', this.s.itemId(v, ref), async (opId) => {
        const job = await this.s.createJob({ vault: v, item: existing, ref, operation: 'Undelete', opId, userTriggered: true });
        await this.s.db.updateTable('recovery_items').set({ deferred_delete_at: null, protection_state: 'ProtectionStopped', updated_at: Date.now() }).where('id_norm', '=', existing.id_norm).execute();
        await this.s.finishJob(job.id, 'Completed');
        return { jobId: job.id };
      });
    }
    if (!b.policyId) throw new ArmError(400, 'BMSUserErrorInvalidInput', 'properties.policyId is required: the id of a backup policy of this vault (e.g. .../backupPolicies/DefaultPolicy).', { target: 'properties.policyId' });
    const policy = await this.s.policyFromId(v, b.policyId);
    return this.s.d.ops.start('Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/write', this.s.itemId(v, ref), async (opId) => {
      const job = await this.s.createJob({ vault: v, item: existing, ref, operation: 'ConfigureBackup', opId, userTriggered: true });
      try {
        await this.s.preflight(v, vmId, { diskExclusion: b.diskExclusion });
        const t = Date.now();
        const ext = JSON.stringify(b.extendedProperties ?? {});
        if (existing) {
          const state = existing.protection_state === 'ProtectionStopped' ? (existing.last_rp_id ? 'Protected' : 'IRPending') : existing.protection_state;
          await this.s.db.updateTable('recovery_items').set({ policy_name: policy.name_norm, protection_state: state, deferred_delete_at: null, extended_json: ext, updated_at: t }).where('id_norm', '=', existing.id_norm).execute();
        } else {
          const vm = await this.s.d.compute.getVm(vmId);
          // The check and the insert in one transaction: two enables of one VM into two vaults cannot both land.
          await this.s.db.transaction().execute(async (tx) => {
            await this.s.requireNotProtectedElsewhere(v, vmId, tx);
            await tx
              .insertInto('recovery_items')
              .values({
                id_norm: itemKey(v.id_norm, ref), vault_norm: v.id_norm, vm_id: vm?.id ?? vmId, vm_rg: vm?.resourceGroup ?? ref.resourceGroup, vm_name: vm?.name ?? ref.vmName, classic: 0,
                policy_name: policy.name_norm, protection_state: 'IRPending', last_backup_status: '', last_backup_time: null, last_rp_id: null, health_json: null, extended_json: ext,
                deferred_delete_at: null, created_at: t, updated_at: t,
              })
              .execute();
          });
        }
        await this.s.finishJob(job.id, 'Completed');
        return { jobId: job.id };
      } catch (e) {
        await this.s.finishJob(job.id, 'Failed', e);
        throw e;
      }
    });
  }

  /** DELETE protectedItems: stop protection and delete the backup data (soft-deleted for 14 days when enabled). */
  async beginDelete(v: VaultRow, item: ItemRow): Promise<string> {
    const ref = refOfItem(item);
    const running = await this.s.runningJobFor(item.id_norm);
    if (running) throw recoveryErrors.inProgress(itemName(ref));
    return this.s.d.ops.start('Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/delete', this.s.itemId(v, ref), async (opId) => {
      const job = await this.s.createJob({ vault: v, item, ref, operation: 'DeleteBackupData', opId, userTriggered: true });
      if (v.soft_delete === 'Enabled' || v.soft_delete === 'AlwaysON') {
        await this.s.db.updateTable('recovery_items').set({ policy_name: null, protection_state: 'ProtectionStopped', deferred_delete_at: Date.now(), updated_at: Date.now() }).where('id_norm', '=', item.id_norm).execute();
      } else {
        await this.purgeItem(v, item);
      }
      await this.s.finishJob(job.id, 'Completed');
      return { jobId: job.id };
    });
  }

  /** Deletes an item and all its recovery points (row first, then manifests; chunks go to GC). */
  async purgeItem(v: VaultRow, item: ItemRow): Promise<void> {
    const points = await this.s.listPoints(item.id_norm);
    await this.s.db.transaction().execute(async (tx) => {
      await tx.deleteFrom('recovery_points').where('item_norm', '=', item.id_norm).execute();
      await tx.deleteFrom('recovery_items').where('id_norm', '=', item.id_norm).execute();
    });
    await this.removeManifests(v, points);
    await this.gc(v);
  }

  private async removeManifests(v: VaultRow, points: PointRow[]): Promise<void> {
    const { store, dir } = await this.s.vaultStore(v);
    for (const p of points) {
      await rm(path.join(dir, 'manifests', p.id), { recursive: true, force: true });
      for await (const name of store.listMeta(`manifests/${p.id}/`)) await store.deleteMeta(name); // the store's copy
    }
  }

  // ---- backup ---------------------------------------------------------------------------------------------------
  /**
   * POST …/backup: validates, creates the Backup job, enqueues it; returns the operation id (status carries the job).
   * The caller needs write and read on the VM, as for enabling protection (stricter than Azure's table, which asks
   * only Backup Operator on the vault: a fresh recovery point of someone else's VM is not the vault's to take).
   */
  async beginBackup(v: VaultRow, item: ItemRow, expiryMs: number | undefined, caller: Caller): Promise<string> {
    await requireAccess(this.s.d.identity, caller, protectNeeds(item.vm_id));
    const ref = refOfItem(item);
    if (item.deferred_delete_at !== null || item.protection_state === 'ProtectionStopped' || !item.policy_name) throw recoveryErrors.notProtected(itemName(ref));
    const now = Date.now();
    if (expiryMs !== undefined && expiryMs <= now) throw new ArmError(400, 'BMSUserErrorInvalidInput', `recoveryPointExpiryTimeInUTC ${new Date(expiryMs).toISOString()} is in the past.`, { target: 'properties.recoveryPointExpiryTimeInUTC' });
    const expiry = expiryMs ?? now + 30 * 86_400_000;
    const running = await this.s.runningJobFor(item.id_norm);
    if (running) throw recoveryErrors.inProgress(itemName(ref));
    const job = await this.s.createJob({ vault: v, item, ref, operation: 'Backup', userTriggered: true, tasks: [TASK_SNAPSHOT, TASK_TRANSFER], params: { expiry, rule: 'OnDemand' } });
    await this.s.d.queue.send(QUEUE_BACKUP, { jobId: job.id }, { uniqueKey: `backup:${job.id}`, retryLimit: 2 });
    return this.s.d.ops.start('Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/backup/action', this.s.itemId(v, ref), async (opId) => {
      await this.s.updateJob(job.id, { op_id: opId });
      return { jobId: job.id };
    });
  }

  /** Queue handler of a scheduler slot: creates (idempotently) the slot's Backup job and enqueues it. */
  async scheduled(payload: { key: string; slot: string }): Promise<void> {
    const item = await this.s.db.selectFrom('recovery_items').selectAll().where('id_norm', '=', payload.key).executeTakeFirst();
    if (!item || !item.policy_name || item.deferred_delete_at !== null) return;
    const v = await this.s.vaultByNorm(item.vault_norm);
    if (!v) return;
    const pol = await this.s.getPolicy(v, item.policy_name);
    if (!pol) return;
    const slot = Date.parse(payload.slot);
    const { expiry, rule } = scheduledExpiry(JSON.parse(pol.props_json) as IaasVmPolicy, slot);
    const ref = refOfItem(item);
    const triggerKey = `scheduled:${item.id_norm}:${payload.slot}`;
    const running = await this.s.runningJobFor(item.id_norm);
    if (running && running.trigger_key !== triggerKey) {
      const j = await this.s.createJob({ vault: v, item, ref, operation: 'Backup', userTriggered: false, triggerKey, tasks: [TASK_SNAPSHOT, TASK_TRANSFER], params: { expiry, rule, slot: payload.slot } });
      if (j.status === 'InProgress' && j.id !== running.id) await this.s.finishJob(j.id, 'Failed', recoveryErrors.inProgress(itemName(ref)));
      return;
    }
    const job = await this.s.createJob({ vault: v, item, ref, operation: 'Backup', userTriggered: false, triggerKey, tasks: [TASK_SNAPSHOT, TASK_TRANSFER], params: { expiry, rule, slot: payload.slot } });
    await this.s.d.queue.send(QUEUE_BACKUP, { jobId: job.id }, { uniqueKey: `backup:${job.id}`, retryLimit: 2 });
  }

  /** Queue handler of a Backup job. */
  async runBackup(ctx: JobContext<{ jobId: string }>): Promise<void> {
    const job = await this.s.getJob(ctx.payload.jobId);
    if (!job || !['InProgress', 'Cancelling'].includes(job.status)) return;
    if (job.cancel_requested) return this.s.finishJob(job.id, 'Cancelled');
    const done = await this.s.db.selectFrom('recovery_points').select('id').where('job_id', '=', job.id).executeTakeFirst();
    if (done) return this.s.finishJob(job.id, 'Completed');
    const v = await this.s.vaultByNorm(job.vault_norm);
    const item = job.item_norm ? await this.s.db.selectFrom('recovery_items').selectAll().where('id_norm', '=', job.item_norm).executeTakeFirst() : undefined;
    if (!v || !item) return this.s.finishJob(job.id, 'Failed', recoveryErrors.itemNotFound(job.friendly_name));
    // This job is the only backup of its VM (one per item): side files of its disks left by an earlier attempt that
    // died are stale.
    await this.removeStaleSnapshots(await this.imagesOfVm(item.vm_id)).catch((e: unknown) => this.s.d.log.warn({ err: e }, 'could not remove stale snapshot files'));
    const ac = new AbortController();
    ctx.signal.addEventListener('abort', () => ac.abort(ctx.signal.reason));
    this.s.running.set(job.id, ac);
    // Cancellation through the database: the API process that took the cancel request may be another process.
    const watch = setInterval(() => {
      void this.s.getJob(job.id).then((j) => {
        if (j?.cancel_requested && !ac.signal.aborted) ac.abort(new Error('cancelled'));
      }, () => undefined);
    }, CANCEL_POLL_MS);
    watch.unref();
    try {
      await this.backupSteps(v, item, job, ac.signal, () => void ctx.heartbeat().catch(() => undefined));
    } catch (e) {
      const cancelled = ac.signal.aborted && (ac.signal.reason as Error | undefined)?.message === 'cancelled';
      if (cancelled) {
        await this.s.finishJob(job.id, 'Cancelled', new RecoveryError(400, 'UserErrorJobCancelled', 'The backup job was cancelled by the user; no recovery point was created.'));
        return;
      }
      if (ctx.signal.aborted) throw e; // lease lost / shutting down: another attempt will run
      if (!(e instanceof ArmError) && ctx.attempt <= 2) throw e; // unexpected: let the queue retry the (idempotent) job
      await this.s.finishJob(job.id, 'Failed', e);
      const err = jobErrorOf(e);
      await this.s.db
        .updateTable('recovery_items')
        .set({ last_backup_status: 'Failed', health_json: JSON.stringify({ healthStatus: 'ActionRequired', healthDetails: [{ code: err.errorCode, title: err.errorTitle, message: err.errorString, recommendations: err.recommendations }] }), updated_at: Date.now() })
        .where('id_norm', '=', item.id_norm)
        .execute();
    } finally {
      clearInterval(watch);
      this.s.running.delete(job.id);
    }
  }

  private async backupSteps(v: VaultRow, item: ItemRow, job: JobRow, signal: AbortSignal, beat: () => void): Promise<void> {
    const s = this.s;
    const compute = s.d.compute;
    const params = JSON.parse(job.params_json) as { expiry: number; rule: string };
    await this.s.setJobTask(job.id, TASK_SNAPSHOT, { status: 'InProgress', startTime: Date.now() });

    // 1. Preflight again: the VM may have changed (encrypted since protection, agent stopped, permission revoked).
    const plan = await s.preflight(v, item.vm_id);
    // 2. Key material, as the Backup Management Service through the normal Key Vault authorization path.
    const keyAndSecret = plan.encrypted ? await this.backupKeys(plan) : undefined;
    signal.throwIfAborted();

    // 3. Snapshots: bitmap handover first, then the point-in-time image under the disk lock, then the dirty set.
    const vm = plan.vm;
    const disks = compute.vmDisks(vm);
    const snaps: { diskId: string; lun?: number | undefined; os: boolean; snap: Snapshot; unhook: () => void; releaseDisk: () => Promise<void>; bitmap: { valid: boolean; bits: Buffer; size: number } }[] = [];
    let committed = false;
    const held: string[] = [];
    try {
      for (const d of disks) {
        await compute.beginBackup(d.diskId);
        const file = await compute.diskImagePath(d.diskId);
        const key = path.resolve(file);
        this.snapping.set(key, (this.snapping.get(key) ?? 0) + 1);
        held.push(key);
        // Scale-out: a copy-on-write snapshot only sees writes made in this process, so the disk stays leased to
        // this process (other processes' writers wait) until the snapshot is released; a reflink clone needs no lease.
        const releaseDisk = await compute.holdDisk(d.diskId);
        await compute.withDiskLock(d.diskId, async () => {
          const snap = await createSnapshot(file);
          const unhook = compute.onBeforeWrite(d.diskId, (o, l) => snap.beforeWrite(o, l));
          if (snap.kind === 'reflink') await releaseDisk();
          const cb = await compute.changedBlocks(d.diskId);
          snaps.push({ ...d, snap, unhook, releaseDisk, bitmap: { valid: cb.valid, bits: cb.bitmap, size: cb.imageSize } });
        }).catch(async (e: unknown) => {
          await releaseDisk();
          throw e;
        });
      }
      const t1 = Date.now();
      await this.s.setJobTask(job.id, TASK_SNAPSHOT, { status: 'Completed', endTime: t1 });
      await this.s.setJobTask(job.id, TASK_TRANSFER, { status: 'InProgress', startTime: t1, progressPercentage: 0 });
      signal.throwIfAborted();

      // 4. Transfer: per disk, incremental against the previous recovery point's manifest when the bitmap is valid.
      const { store, keys, dir } = await s.vaultStore(v);
      const prevRp = item.last_rp_id ? await s.getPoint(item.id_norm, item.last_rp_id) : undefined;
      const prevDisks = prevRp ? (JSON.parse(prevRp.disks_json) as DiskRecord[]) : [];
      // The id is reserved by creating its directory exclusively: a concurrent backup can never share it.
      const { id: rpId, dir: rpDir } = await allocatePointId(path.join(dir, 'manifests'));
      const total = snaps.reduce((a, x) => a + x.snap.size, 0);
      let doneBefore = 0;
      let stored = 0;
      let read = 0;
      let lastUpdate = 0;
      const records: DiskRecord[] = [];
      for (const x of snaps) {
        const disk = await compute.requireDisk(x.diskId);
        const prevRec = prevDisks.find((p) => p.diskId.toLowerCase() === x.diskId.toLowerCase());
        let previous: Manifest | undefined;
        // A previous manifest that does not authenticate is not trusted as a base: this backup reads everything.
        if (prevRec) previous = await readPointManifest({ store, dir }, keys, prevRp!, prevRec).catch(() => undefined);
        const chunkSize = previous && previous.diskSize === x.snap.size ? previous.chunkSize : chunkSizeFor(x.snap.size);
        if (previous && (previous.diskSize !== x.snap.size || previous.chunkSize !== chunkSize)) previous = undefined;
        let bitmap: ChangedBlockBitmap | undefined;
        if (previous && x.bitmap.valid && x.bitmap.size === x.snap.size) {
          try {
            bitmap = new ChangedBlockBitmap(x.snap.size, x.bitmap.bits);
          } catch {
            bitmap = undefined;
          }
        }
        const res = await backupImage({
          store, keys, source: x.snap, chunkSize, previous, bitmap, signal,
          onProgress: (p) => {
            beat();
            const now = Date.now();
            if (now - lastUpdate < 500) return;
            lastUpdate = now;
            const pct = total ? Math.min(99, Math.floor(((doneBefore + p.bytesDone) / total) * 100)) : 0;
            void this.s.setJobTask(job.id, TASK_TRANSFER, { progressPercentage: pct }, { progress: pct }).catch(() => undefined);
          },
        });
        doneBefore += x.snap.size;
        stored += res.stats.bytesStored;
        read += res.stats.bytesRead;
        const file = `${diskSlot(x)}.manifest`;
        const mac = await writeManifestFile(path.join(rpDir, file), res.manifest, { mac: manifestMac(keys, rpId, item.id_norm, { os: x.os, lun: x.lun, diskId: disk.id }), exclusive: true });
        records.push({ diskId: disk.id, name: disk.name, lun: x.lun, os: x.os, sizeBytes: x.snap.size, manifest: file, chunkSize, mac: mac.toString('hex') });
      }
      signal.throwIfAborted();

      // 5. Commit: the recovery point row, the item and the job in one transaction.
      const vmConfig = await compute.vmConfig(vm.id);
      const t = Date.now();
      const sealed = keyAndSecret ? s.d.sealer.sealText(JSON.stringify(keyAndSecret), `recovery-rp-keys:${rpId}`) : null;
      const bag = { 'VM Name': vm.name, 'Backup Size': mb(total), 'Data Transferred (in MB)': String(Math.round(stored / (1024 * 1024))), 'Bytes Transferred': String(stored), 'Bytes Read': String(read), 'Recovery Point Id': rpId, 'Backup Type': prevRp && previous_ok(records, prevDisks) ? 'Incremental' : 'Full' };
      // The index file makes the directory self-describing (recatalog); written before the row, exclusively.
      await writePointIndex(rpDir, keys, {
        format: 1, recoveryPointId: rpId, vault: v.id_norm, item: { idNorm: item.id_norm, vmId: item.vm_id, vmRg: item.vm_rg, vmName: item.vm_name, classic: item.classic },
        jobId: job.id, time: t, expiry: params.expiry, rule: params.rule, rpType: 'CrashConsistent', encrypted: plan.encrypted ? 1 : 0,
        encryptionMechanism: plan.encrypted ? 'SinglePass' : 'None', keysSealed: sealed, sizeBytes: stored, vm: vmConfig, disks: records,
      });
      await mirrorPoint(store, rpDir, rpId);
      await s.serialJob(job.id, async () => {
      const j0 = (await s.getJob(job.id))!;
      const tasks = (JSON.parse(j0.tasks_json) as JobTask[]).map((x) => (x.taskId === TASK_TRANSFER ? { ...x, status: 'Completed' as const, endTime: t, progressPercentage: 100 } : x));
      await s.db.transaction().execute(async (tx) => {
        await tx
          .insertInto('recovery_points')
          .values({
            id: rpId, vault_norm: v.id_norm, item_norm: item.id_norm, job_id: job.id, time: t, expiry: params.expiry, rule: params.rule, rp_type: 'CrashConsistent',
            disks_json: JSON.stringify(records), vm_json: JSON.stringify(vmConfig), encrypted: plan.encrypted ? 1 : 0, keys_sealed: sealed,
            encryption_mechanism: plan.encrypted ? 'SinglePass' : 'None', size_bytes: stored, created_at: t,
          })
          .execute();
        await tx
          .updateTable('recovery_items')
          .set({ protection_state: item.protection_state === 'IRPending' ? 'Protected' : item.protection_state, last_backup_status: 'Completed', last_backup_time: t, last_rp_id: rpId, health_json: null, updated_at: t })
          .where('id_norm', '=', item.id_norm)
          .execute();
        await tx
          .updateTable('recovery_jobs')
          .set({ status: 'Completed', end_time: t, progress: 100, tasks_json: JSON.stringify(tasks), bag_json: JSON.stringify({ ...JSON.parse(j0.bag_json), ...bag }) })
          .where('id', '=', job.id)
          .execute();
      });
      });
      committed = true;
      for (const x of snaps) await compute.markBackedUp(x.diskId, { recoveryPointId: rpId }).catch((e: unknown) => s.d.log.warn({ err: e, disk: x.diskId }, 'could not reset the changed-block bitmap'));
    } finally {
      for (const x of snaps) {
        x.unhook();
        await x.snap.release().catch(() => undefined);
        await x.releaseDisk().catch(() => undefined);
        if (!committed) await compute.abortBackup(x.diskId).catch(() => undefined);
      }
      for (const key of held) {
        const n = (this.snapping.get(key) ?? 1) - 1;
        if (n > 0) this.snapping.set(key, n);
        else this.snapping.delete(key);
      }
    }
  }

  /** KEK: keys/backup (+ get for its URL); BEK: secrets/get (the wrapped value) + secrets/backup. Never unwraps. */
  private async backupKeys(plan: VmPlan): Promise<Record<string, unknown>> {
    const s = this.s;
    const kv = s.d.keyvault;
    const bms = await s.bms();
    const out: Record<string, unknown> = { encryptionMechanism: 'SinglePass' };
    if (plan.kek) {
      const k = parseObjectUrl(plan.kek.keyUrl);
      if (!k) throw recoveryErrors.keyOrSecretMissing(plan.kek.keyUrl);
      try {
        const blob = await kv.backupKey(bms, plan.kek.keyVaultId, k.name);
        out.kekDetails = { keyUrl: plan.kek.keyUrl, keyVaultId: plan.kek.keyVaultId, keyBackupData: blob };
      } catch (e) {
        throw this.kvErr(e, plan.kek.keyVaultId, plan.kek.keyUrl, bms.objectId);
      }
    }
    if (plan.bek) {
      const b = parseObjectUrl(plan.bek.secretUrl);
      if (!b) throw recoveryErrors.keyOrSecretMissing(plan.bek.secretUrl);
      try {
        const sec = await kv.getSecret(bms, plan.bek.secretVaultId, b.name, b.version);
        const blob = await kv.backupSecret(bms, plan.bek.secretVaultId, b.name);
        out.bekDetails = { secretUrl: plan.bek.secretUrl, secretVaultId: plan.bek.secretVaultId, secretData: sec.value, secretBackupData: blob, contentType: sec.contentType, tags: sec.tags };
      } catch (e) {
        throw this.kvErr(e, plan.bek.secretVaultId, plan.bek.secretUrl, bms.objectId);
      }
    }
    return out;
  }

  private kvErr(e: unknown, vaultId: string, url: string, bmsObjectId: string): Error {
    if (e instanceof KeyVaultError) {
      if (e.status === 403) return recoveryErrors.kvPermissions(vaultId.split('/').pop()!, `${e.message}`, bmsObjectId);
      if (e.code === 'KeyNotFound' || e.code === 'SecretNotFound') return recoveryErrors.keyOrSecretMissing(url);
    }
    return this.s.kvError(e, vaultId);
  }

  // ---- retention + GC ---------------------------------------------------------------------------------------------
  /** Prunes expired recovery points and soft-deleted items past their 14 days, then collects garbage per vault. */
  async retention(): Promise<{ pruned: number; purgedItems: number }> {
    const s = this.s;
    const now = s.now();
    const expired = await s.db.selectFrom('recovery_points').selectAll().where('expiry', '<=', now).execute();
    const touched = new Set<string>();
    let pruned = 0;
    for (const rp of expired) {
      const v = await s.vaultByNorm(rp.vault_norm);
      // Keep the newest point of an item whose data is retained (Azure keeps the last RP while protection is stopped).
      const item = await s.db.selectFrom('recovery_items').selectAll().where('id_norm', '=', rp.item_norm).executeTakeFirst();
      if (item && item.protection_state === 'ProtectionStopped' && item.deferred_delete_at === null && item.last_rp_id === rp.id) continue;
      // A recovery point being restored stays until the restore ends (its manifest is live for GC meanwhile).
      const restoring = await s.db.selectFrom('recovery_jobs').select('params_json').where('item_norm', '=', rp.item_norm).where('operation', '=', 'Restore').where('status', 'in', ['InProgress', 'Cancelling']).execute();
      if (restoring.some((j) => (JSON.parse(j.params_json) as { rpId?: string }).rpId === rp.id)) continue;
      await s.db.transaction().execute(async (tx) => {
        await tx.deleteFrom('recovery_points').where('id', '=', rp.id).execute();
        if (item && item.last_rp_id === rp.id) {
          const newer = await tx.selectFrom('recovery_points').select('id').where('item_norm', '=', rp.item_norm).orderBy('time', 'desc').executeTakeFirst();
          await tx.updateTable('recovery_items').set({ last_rp_id: newer?.id ?? null }).where('id_norm', '=', rp.item_norm).execute();
        }
      });
      pruned++;
      if (v) {
        await this.removeManifests(v, [rp]);
        touched.add(v.id_norm);
      }
    }
    let purgedItems = 0;
    const dead = await s.db.selectFrom('recovery_items').selectAll().where('deferred_delete_at', 'is not', null).where('deferred_delete_at', '<=', now - softDeleteMs).execute();
    for (const it of dead) {
      const v = await s.vaultByNorm(it.vault_norm);
      if (!v) continue;
      await this.purgeItem(v, it);
      purgedItems++;
    }
    for (const vn of touched) {
      const v = await s.vaultByNorm(vn);
      if (v) await this.gc(v);
    }
    if (pruned || purgedItems) s.d.log.info({ pruned, purgedItems }, 'retention pruned recovery points');
    return { pruned, purgedItems };
  }

  /**
   * Mark-and-sweep of the vault's chunk store; cutoff = the start of the oldest running backup of the vault (job rows
   * in the database: every process's backups count). One GC per vault at a time across all processes: the
   * cluster-wide lock `gc:{vault}` (a lease row, see platform/db/locks.ts).
   */
  async gc(v: VaultRow): Promise<void> {
    const next = this.s.d.locks.withLock(`gc:${v.id_norm}`, async () => {
      const { store, keys, dir } = await this.s.vaultStore(v);
      const running = await this.s.db.selectFrom('recovery_jobs').select('start_time').where('vault_norm', '=', v.id_norm).where('status', 'in', ['InProgress', 'Cancelling']).orderBy('start_time').executeTakeFirst();
      const cutoff = new Date(Math.min(Date.now(), running ? Number(running.start_time) : Date.now()));
      const points: { id: string; item_norm: string; disks_json: string }[] = await this.s.db.selectFrom('recovery_points').select(['id', 'item_norm', 'disks_json']).where('vault_norm', '=', v.id_norm).execute();
      // A point with a valid index in the store but no row is a recovery point the database lost (recatalog brings it
      // back): its chunks stay live. A local directory without one (a backup that crashed before its index reached
      // the store, or this node's copy of a point deleted through another) is not a recovery point: removed after an
      // hour (and only when older than the oldest running backup of the vault).
      const ids = new Set(points.map((p) => p.id));
      let uncatalogued = 0;
      for (const id of await listPointDirs({ store, dir })) {
        if (ids.has(id)) continue;
        const idx = await readPointIndex({ store, dir }, keys, id, { local: false }).catch(() => undefined);
        if (idx) {
          points.push({ id: idx.recoveryPointId, item_norm: idx.item.idNorm, disks_json: JSON.stringify(idx.disks) });
          uncatalogued++;
          continue;
        }
        const st = await stat(path.join(dir, 'manifests', id)).catch(() => undefined);
        // Older than an hour and than the oldest running backup: a backup longer than an hour still owns its directory.
        if (st?.isDirectory() && st.mtimeMs < Math.min(Date.now() - 3600_000, cutoff.getTime())) await rm(path.join(dir, 'manifests', id), { recursive: true, force: true });
      }
      if (uncatalogued) this.s.d.log.warn({ vault: v.name, uncatalogued }, 'recovery points on disk have no database row: run rsvault backup vault recatalog');
      async function* live(): AsyncIterable<Manifest> {
        for (const p of points) for (const d of JSON.parse(p.disks_json) as DiskRecord[]) yield await readPointManifest({ store, dir }, keys, p, d);
      }
      const stats = await collectGarbage({ store, liveManifests: live(), cutoff, safetyMarginMs: 0 });
      this.s.d.log.info({ vault: v.name, fossilized: stats.fossilized, swept: stats.swept }, 'vault garbage collected');
    });
    next.catch((e: unknown) => this.s.d.log.error({ err: e, vault: v.name }, 'garbage collection failed'));
    await next;
  }

  /**
   * At start-up. Worker role: InProgress Backup and Restore jobs are (re-)enqueued — the unique key makes this a
   * no-op when their queue job still exists; an interrupted backup's idempotent steps finish it, an interrupted
   * restore fails with UserErrorRestoreInterrupted and its leftovers are removed (Restore.runQueued).
   * API role: jobs of operations that ran in the API process (ConfigureBackup, DisableBackup, ...) fail with a clear
   * error. (With several API processes, start them together or after their operations drained: one process cannot
   * tell another live process's in-flight operation from a dead one's.)
   */
  async recoverInterrupted(roles: { api: boolean; worker: boolean } = { api: true, worker: true }): Promise<{ failed: number; resumed: number }> {
    const s = this.s;
    const rows = await s.db.selectFrom('recovery_jobs').selectAll().where('status', 'in', ['InProgress', 'Cancelling']).execute();
    let failed = 0;
    let resumed = 0;
    for (const j of rows) {
      if (j.operation === 'Backup' || j.operation === 'Restore') {
        if (!roles.worker) continue;
        if (j.operation === 'Backup') await s.d.queue.send(QUEUE_BACKUP, { jobId: j.id }, { uniqueKey: `backup:${j.id}`, retryLimit: 2 });
        else await s.d.queue.send(QUEUE_RESTORE, { jobId: j.id }, { uniqueKey: `restore:${j.id}`, retryLimit: 2 });
        resumed++;
      } else if (j.operation === 'Verify') {
        if (!roles.worker) continue;
        await s.d.queue.send(QUEUE_VERIFY, { jobId: j.id }, { uniqueKey: `verify:${j.id}`, retryLimit: 1 }); // read-only: runs again
        resumed++;
      } else if (roles.api) {
        await s.finishJob(j.id, 'Failed', { errorCode: 500002, errorString: `The server restarted while this ${j.operation} job was running; nothing was committed by it. Retry the operation.`, errorTitle: 'OperationInterrupted', recommendations: ['Retry the operation.'] });
        failed++;
      }
    }
    return { failed, resumed };
  }

  /** A worker that died too often: the job fails with a clear error instead of staying InProgress. */
  async deadBackup(jobId: string, error: string): Promise<void> {
    const j = await this.s.getJob(jobId);
    if (!j || !['InProgress', 'Cancelling'].includes(j.status)) return;
    const item = j.item_norm ? await this.s.db.selectFrom('recovery_items').select('vm_id').where('id_norm', '=', j.item_norm).executeTakeFirst() : undefined;
    if (item) await this.removeStaleSnapshots(await this.imagesOfVm(item.vm_id)).catch(() => undefined);
    await this.s.finishJob(jobId, 'Failed', { errorCode: 500001, errorString: `Backup failed: ${error}. No recovery point was created.`, errorTitle: 'BackUpOperationFailed', recommendations: ['Retry the backup (rsvault backup protection backup-now).'] });
  }
}

function previous_ok(records: DiskRecord[], prev: DiskRecord[]): boolean {
  return records.every((r) => prev.some((p) => p.diskId.toLowerCase() === r.diskId.toLowerCase()));
}

export function parseVmId(id: string): { resourceGroup: string; vmName: string; classic: boolean } | undefined {
  const m = /^\/subscriptions\/[^/]+\/resourceGroups\/([^/]+)\/providers\/Microsoft\.(Classic)?Compute\/virtualMachines\/([^/]+)$/i.exec(id);
  return m ? { resourceGroup: m[1]!, vmName: m[3]!, classic: !!m[2] } : undefined;
}

