/**
 * Restore (`POST …/recoveryPoints/{rp}/restore`, a Restore job) and restore of keys and secrets.
 *
 * RestoreDisks: each disk to the staging storage account (blobs), or as managed disks in `targetResourceGroupId`,
 * plus the VM config JSON, the encryption-info JSON and an ARM template in a new container of the storage account.
 * AlternateLocation: the same as managed disks, then the VM, as the Backup Management Service (which must hold a role
 * on the target group and deploy access to the key vaults). OriginalLocation: replaces the disks of the existing VM
 * (plain VMs only). Key and secret checks run before anything is written and again in the job.
 *
 * Nothing half-written is ever presented: disk images go to `.partial` files (engine), blobs to a staging container
 * published by one rename, managed disks are created only from complete images; a failure removes all of it, and
 * start-up removes what a killed process left (`cleanLeftovers`).
 */
import { mkdir, readdir, rm, rmdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { EngineError, restoreImage } from '../engine/index.js';
import { readPointManifest } from './integrity.js';
import { ArmError, armErrors } from '../platform/http/errors.js';
import type { JobContext } from '../platform/jobs/index.js';
import { KeyVaultError, parseObjectUrl, type KvPrincipal } from '../keyvault/index.js';
import type { OsType } from '../compute/index.js';
import { parseAccountId, type StorageAccount } from '../storage/index.js';
import { BACKUP_MANAGEMENT_SERVICE_APP_ID } from '../identity/index.js';
import { parseResourceId } from '../resources/index.js';
import type { Caller } from '../platform/auth/index.js';
import { DISK_WRITE, GROUP_WRITE, STORAGE_WRITE, VM_READ, VM_WRITE, keyNeeds, protectNeeds, requireAccess, type Need } from './access.js';
import { RecoveryError, recoveryErrors, restoreErrors } from './errors.js';
import { itemName } from './model.js';
import { QUEUE_RESTORE, refOfItem, type ItemRow, type JobRow, type PointRow, type RecoveryService, type VaultRow } from './service.js';
import type { DiskRecord } from './backup.js';
import { parseVmId } from './backup.js';
import { armTemplate, encryptionInfoJson, encryptionSettingsCollection, vmConfigJson, vmEncryptionSettings, type EncryptionTarget, type RestoredDisk, type RpKeys, type VmSource } from './restore-outputs.js';

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const lc = (s: string) => s.toLowerCase();
const TASK_TRANSFER = 'Transfer data';
const TASK_VM = 'Create VM';

/** A RestorePlan as stored in the job (the storage account by id, looked up again by the worker). */
type QueuedPlan = Omit<RestorePlan, 'storageAccount'> & { storageAccount?: undefined; storageAccountId?: string | undefined };

const RESTORE_INTERRUPTED = {
  errorCode: 400323,
  errorString: 'The worker running this Restore job stopped before it finished; nothing it wrote was kept (no restored disk, blob or VM is presented), and its partial files were removed.',
  errorTitle: 'UserErrorRestoreInterrupted',
  recommendations: ['Retry the restore.'],
};

export type RecoveryType = 'RestoreDisks' | 'AlternateLocation' | 'OriginalLocation';

export interface RestorePlan {
  recoveryType: RecoveryType;
  rpId: string;
  storageAccount?: StorageAccount | undefined;
  targetRg?: { sub: string; name: string; id: string; location: string } | undefined;
  targetVm?: { sub: string; rg: string; name: string; id: string } | undefined;
  enc?: EncryptionTarget | undefined;
  luns?: number[] | undefined;
  origin: string;
  caller: KvPrincipal;
}

interface RpVm {
  id?: string;
  name?: string;
  location?: string;
  osType?: string;
  hardwareProfile?: { vmSize?: string };
  osProfile?: { computerName?: string };
}

function str(o: Obj, k: string, target: string): string | undefined {
  const v = o[k];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw armErrors.invalidContent(`'${target}' must be a string.`, target);
  return v;
}

const rgIdRe = /^\/subscriptions\/([^/]+)\/resourceGroups\/([^/]+)$/i;

export class Restore {
  constructor(private readonly s: RecoveryService) {}

  /** A Key Vault URL in the form clients reach (keyvault urls.ts: same vault + object, current host and port). */
  private url(u: string): string {
    return this.s.d.keyvault.urls.canonical(u);
  }

  private get storage() {
    const st = this.s.d.storage;
    if (!st) throw new ArmError(503, 'StorageUnavailable', 'The storage service is not available in this server.');
    return st;
  }

  /** The command that restores the recovery point's key and secret (named in error recommendations). */
  fixCommand(v: VaultRow, item: ItemRow, rpId: string, targetVault?: string): string {
    const rg = groupOf(v);
    return `rsvault backup restore restore-keys --vault-name ${v.name} -g ${rg} --container-name ${item.vm_name} --item-name ${item.vm_name} --rp-name ${rpId} --target-key-vault ${targetVault ?? '<key vault name>'}`;
  }

  private restoreDisksCommand(v: VaultRow, item: ItemRow, rpId: string, account: string): string {
    const rg = groupOf(v);
    return `rsvault backup restore restore-disks --vault-name ${v.name} -g ${rg} --container-name ${item.vm_name} --item-name ${item.vm_name} --rp-name ${rpId} --storage-account ${account}`;
  }

  private async point(item: ItemRow, rpId: string): Promise<PointRow> {
    const rp = await this.s.getPoint(item.id_norm, rpId);
    if (!rp) throw recoveryErrors.rpNotFound(rpId);
    if (rp.expiry <= this.s.now()) throw new RecoveryError(400, 'UserErrorRecoveryPointExpired', `The recovery point '${rpId}' has expired and is being pruned.`, { recommendation: 'Pick a newer recovery point: rsvault backup recoverypoint list' });
    return rp;
  }

  // ---- validation -------------------------------------------------------------------------------------------------
  /**
   * Validates an IaasVMRestoreRequest; every failure is a 400/403/404 before anything is written. The caller needs
   * write and read on the source VM and write on every target (access.ts), checked before the target is looked up.
   */
  async plan(v: VaultRow, item: ItemRow, rpId: string, body: unknown, origin: string, caller: Caller): Promise<{ plan: RestorePlan; rp: PointRow; keys?: RpKeys | undefined }> {
    const need = (needs: Need[]) => requireAccess(this.s.d.identity, caller, needs);
    await need(protectNeeds(item.vm_id));
    if (!isObj(body) || !isObj(body.properties)) throw armErrors.invalidContent('The request body must be {"properties": {"objectType": "IaasVMRestoreRequest", "recoveryType": "RestoreDisks", "storageAccountId": "...", ...}}.', 'properties');
    const p = body.properties;
    const ot = str(p, 'objectType', 'properties.objectType');
    if (!ot || !['iaasvmrestorerequest', 'iaasvmrestorewithrehydrationrequest'].includes(lc(ot))) throw armErrors.invalidContent(`properties.objectType '${ot ?? ''}' is not supported: use 'IaasVMRestoreRequest'.`, 'properties.objectType');
    const rt = str(p, 'recoveryType', 'properties.recoveryType');
    const recoveryType = (['RestoreDisks', 'AlternateLocation', 'OriginalLocation'] as const).find((x) => lc(x) === lc(rt ?? ''));
    if (!recoveryType) throw armErrors.invalidContent(`properties.recoveryType '${rt ?? ''}' is not supported: use RestoreDisks, AlternateLocation or OriginalLocation.`, 'properties.recoveryType');
    const bodyRp = str(p, 'recoveryPointId', 'properties.recoveryPointId');
    if (bodyRp && bodyRp !== rpId) throw armErrors.invalidContent(`properties.recoveryPointId '${bodyRp}' does not match the recovery point '${rpId}' of the URL.`, 'properties.recoveryPointId');
    const src = str(p, 'sourceResourceId', 'properties.sourceResourceId');
    if (src && lc(src) !== lc(item.vm_id)) throw armErrors.invalidContent(`properties.sourceResourceId '${src}' is not the protected VM '${item.vm_id}'.`, 'properties.sourceResourceId');
    const rp = await this.point(item, rpId);
    const keys = this.s.openKeys(rp) as RpKeys | undefined;
    const encrypted = rp.encrypted === 1 && !!keys?.bekDetails;
    const running = await this.s.runningJobFor(item.id_norm);
    if (running) throw recoveryErrors.inProgress(itemName(refOfItem(item)));
    const luns = p.restoreDiskLunList;
    if (luns !== undefined && luns !== null && (!Array.isArray(luns) || luns.some((x) => !Number.isInteger(x)))) throw armErrors.invalidContent("'properties.restoreDiskLunList' must be an array of integer luns.", 'properties.restoreDiskLunList');
    const disks = JSON.parse(rp.disks_json) as DiskRecord[];
    for (const l of (luns as number[] | undefined) ?? []) if (!disks.some((d) => !d.os && d.lun === l)) throw armErrors.invalidContent(`The recovery point has no data disk at lun ${l}.`, 'properties.restoreDiskLunList');
    const plan: RestorePlan = { recoveryType, rpId, origin, caller, luns: (luns as number[] | undefined) ?? undefined };

    // Targets.
    const saId = str(p, 'storageAccountId', 'properties.storageAccountId');
    if (recoveryType !== 'OriginalLocation') {
      if (!saId) throw armErrors.invalidContent("'properties.storageAccountId' is required: the staging storage account for the VM config, the encryption info and the template (and the disks unless targetResourceGroupId is given).", 'properties.storageAccountId');
      const ref = parseAccountId(saId);
      if (!ref) throw armErrors.invalidContent(`'properties.storageAccountId' '${saId}' is not a storage account id (/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}).`, 'properties.storageAccountId');
      await need([{ action: STORAGE_WRITE, scope: saId }]);
      const sa = await this.storage.getAccount(saId);
      if (!sa) throw restoreErrors.storageNotFound(saId);
      plan.storageAccount = sa;
    }
    const trg = str(p, 'targetResourceGroupId', 'properties.targetResourceGroupId');
    if (trg) {
      const m = rgIdRe.exec(trg);
      if (!m) throw armErrors.invalidContent(`'properties.targetResourceGroupId' '${trg}' is not a resource group id (/subscriptions/{s}/resourceGroups/{rg}).`, 'properties.targetResourceGroupId');
      await need(targetGroupNeeds(trg, recoveryType));
      const g = await this.s.d.resources.requireGroup(m[1]!, m[2]!);
      plan.targetRg = { sub: m[1]!, name: g.name, id: g.id, location: g.location };
    }
    if (recoveryType === 'AlternateLocation') {
      const tv = str(p, 'targetVirtualMachineId', 'properties.targetVirtualMachineId');
      if (!tv) throw armErrors.invalidContent("'properties.targetVirtualMachineId' is required for AlternateLocation: the id of the VM to create.", 'properties.targetVirtualMachineId');
      const m = /^\/subscriptions\/([^/]+)\/resourceGroups\/([^/]+)\/providers\/Microsoft\.Compute\/virtualMachines\/([^/]+)$/i.exec(tv);
      if (!m) throw armErrors.invalidContent(`'properties.targetVirtualMachineId' '${tv}' is not a VM id.`, 'properties.targetVirtualMachineId');
      if (!plan.targetRg) {
        await need(targetGroupNeeds(`/subscriptions/${m[1]}/resourceGroups/${m[2]}`, recoveryType));
        const g = await this.s.d.resources.requireGroup(m[1]!, m[2]!);
        plan.targetRg = { sub: m[1]!, name: g.name, id: g.id, location: g.location };
      } else if (lc(plan.targetRg.name) !== lc(m[2]!)) throw armErrors.invalidContent(`The target VM '${tv}' is not in targetResourceGroupId '${plan.targetRg.id}'.`, 'properties.targetVirtualMachineId');
      plan.targetVm = { sub: m[1]!, rg: plan.targetRg.name, name: m[3]!, id: `/subscriptions/${m[1]}/resourceGroups/${plan.targetRg.name}/providers/Microsoft.Compute/virtualMachines/${m[3]}` };
      if (await this.s.d.compute.getVm(plan.targetVm.id)) throw restoreErrors.targetVmExists(plan.targetVm.id);
    }
    if (recoveryType === 'OriginalLocation') {
      if (encrypted) throw restoreErrors.originalLocationEncrypted(item.vm_name);
      const vm = await this.s.d.compute.getVm(item.vm_id);
      if (!vm) throw recoveryErrors.vmNotFound(item.vm_id);
      await need(disks.map((d) => ({ action: DISK_WRITE, scope: d.diskId })));
      const attached = this.s.d.compute.vmDisks(vm).map((d) => lc(d.diskId));
      for (const d of disks) if (!attached.includes(lc(d.diskId))) throw new RecoveryError(400, 'UserErrorOriginalDiskNotAttached', `The disk '${d.name}' of the recovery point is no longer attached to VM '${vm.name}'; the original location cannot be restored.`, { recommendation: "Restore the disks ('RestoreDisks') or to a new VM ('AlternateLocation')." });
    }

    // Encryption: encryptionDetails decide what is stamped; by default what the recovery point recorded.
    if (encrypted) {
      const ed = p.encryptionDetails;
      if (ed !== undefined && ed !== null && !isObj(ed)) throw armErrors.invalidContent("'properties.encryptionDetails' must be an object: {encryptionEnabled, kekUrl, secretKeyUrl, kekVaultId, secretKeyVaultId}.", 'properties.encryptionDetails');
      const e = (ed ?? {}) as Obj;
      const secretUrl = str(e, 'secretKeyUrl', 'properties.encryptionDetails.secretKeyUrl') ?? keys!.bekDetails!.secretUrl;
      const kekUrl = str(e, 'kekUrl', 'properties.encryptionDetails.kekUrl') ?? keys!.kekDetails?.keyUrl;
      for (const [u, t, coll] of [[secretUrl, 'secretKeyUrl', 'secrets'], [kekUrl, 'kekUrl', 'keys']] as const) {
        if (!u) continue;
        const o = parseObjectUrl(u);
        if (!o || o.collection !== coll || !o.version) throw armErrors.invalidContent(`'properties.encryptionDetails.${t}' '${u}' is not a versioned Key Vault ${coll === 'keys' ? 'key' : 'secret'} URL.`, `properties.encryptionDetails.${t}`);
      }
      const vaultIdFor = async (given: string | undefined, url: string, recordedUrl: string | undefined, recordedId: string | undefined): Promise<string> => {
        if (given) return given;
        const name = parseObjectUrl(url)!.vaultName;
        if (recordedUrl && recordedId && parseObjectUrl(recordedUrl)?.vaultName === name) return recordedId;
        return (await this.s.d.keyvault.getVaultByName(name))?.id ?? name;
      };
      plan.enc = {
        secretUrl: this.url(secretUrl),
        secretVaultId: await vaultIdFor(str(e, 'secretKeyVaultId', 'properties.encryptionDetails.secretKeyVaultId'), secretUrl, keys!.bekDetails!.secretUrl, keys!.bekDetails!.secretVaultId),
        ...(kekUrl ? { kekUrl: this.url(kekUrl), kekVaultId: await vaultIdFor(str(e, 'kekVaultId', 'properties.encryptionDetails.kekVaultId'), kekUrl, keys!.kekDetails?.keyUrl, keys!.kekDetails?.keyVaultId) } : {}),
      };
      await this.checkKeys(v, item, rpId, plan.enc, caller);
    }
    if (recoveryType === 'AlternateLocation') await this.checkAuthorization(v, item, rpId, plan);
    return { plan, rp, keys };
  }

  /** The key vaults exist and hold the exact key version and secret version (ERRORS.md #2, #3). */
  async checkKeys(v: VaultRow, item: ItemRow, rpId: string, e: EncryptionTarget, caller: KvPrincipal): Promise<void> {
    const kv = this.s.d.keyvault;
    const vaults = [...new Set([e.secretVaultId, ...(e.kekVaultId ? [e.kekVaultId] : [])])];
    for (const id of vaults) {
      const found = id.startsWith('/') ? await kv.getVault(id) : await kv.getVaultByName(id);
      if (!found) throw restoreErrors.kvNotFound(id, this.fixCommand(v, item, rpId));
    }
    const bms = await this.s.bms();
    const missing: string[] = [];
    const probe = async (what: 'key' | 'secret', url: string, vaultId: string) => {
      const o = parseObjectUrl(url)!;
      const get = (as: KvPrincipal) => (what === 'key' ? kv.getKey(as, vaultId, o.name, o.version) : kv.getSecret(as, vaultId, o.name, o.version));
      try {
        await get(bms).catch(async (err: unknown) => {
          if (err instanceof KeyVaultError && err.status === 403) return get(caller); // the BMS may not be granted on a recreated vault
          throw err;
        });
      } catch (err) {
        if (err instanceof KeyVaultError && err.status === 404) missing.push(url);
        else if (err instanceof KeyVaultError && err.status === 403) throw recoveryErrors.kvPermissions(o.vaultName, `${what}s get`, bms.objectId);
        else throw this.s.kvError(err, vaultId);
      }
    };
    if (e.kekUrl && e.kekVaultId) await probe('key', e.kekUrl, e.kekVaultId);
    await probe('secret', e.secretUrl, e.secretVaultId);
    if (missing.length) throw restoreErrors.keyAndSecretNotFound(missing, this.fixCommand(v, item, rpId));
  }

  /** AlternateLocation: the Backup Management Service needs a role on the target group and deploy access to the vaults (ERRORS.md #4). */
  private async checkAuthorization(v: VaultRow, item: ItemRow, rpId: string, plan: RestorePlan): Promise<void> {
    const bms = await this.s.bms();
    const as = { objectId: bms.objectId, tenantId: bms.tenantId, appId: bms.appId, kind: 'ServicePrincipal' as const, audience: 'internal' };
    const missing: string[] = [];
    const grants: string[] = [];
    const rg = plan.targetRg!;
    for (const action of ['Microsoft.Compute/virtualMachines/write', 'Microsoft.Compute/disks/write']) {
      if (!(await this.s.d.identity.checkAccess(as, rg.id, action))) missing.push(`'${action}' on '${rg.id}'`);
    }
    if (missing.length) grants.push(`rsvault role assignment create --assignee ${BACKUP_MANAGEMENT_SERVICE_APP_ID} --role "Virtual Machine Contributor" --scope ${rg.id}`);
    for (const id of [...new Set([plan.enc?.secretVaultId, plan.enc?.kekVaultId].filter((x): x is string => !!x))]) {
      if (!(await this.s.d.identity.checkAccess(as, id, 'Microsoft.KeyVault/vaults/deploy/action'))) {
        missing.push(`'Microsoft.KeyVault/vaults/deploy/action' on '${id}'`);
        grants.push(`rsvault role assignment create --assignee ${BACKUP_MANAGEMENT_SERVICE_APP_ID} --role Contributor --scope ${id}`);
      }
    }
    if (missing.length) throw restoreErrors.notAuthorized(rg.id, missing, this.restoreDisksCommand(v, item, rpId, plan.storageAccount?.name ?? '<storage account>'), grants);
  }

  // ---- the job -------------------------------------------------------------------------------------------------------
  /**
   * POST …/restore: validates (every failure is a 400/404 before anything is written), creates the Restore job and
   * enqueues it: a worker (any process with the worker role) runs it. The operation's status carries the job id.
   */
  async beginRestore(v: VaultRow, item: ItemRow, rpId: string, body: unknown, origin: string, caller: Caller): Promise<string> {
    const { plan, rp } = await this.plan(v, item, rpId, body, origin, caller);
    const ref = refOfItem(item);
    const bag: Record<string, string> = { 'Recovery Point Id': rpId, 'Restore Type': plan.recoveryType, 'Recovery Point Time': new Date(Number(rp.time)).toISOString() };
    if (plan.storageAccount) bag['Target Storage Account Name'] = plan.storageAccount.name;
    if (plan.targetRg) bag['Target Resource Group'] = plan.targetRg.name;
    if (plan.targetVm) bag['Target VM Name'] = plan.targetVm.name;
    const tasks = plan.recoveryType === 'AlternateLocation' ? [TASK_TRANSFER, TASK_VM] : [TASK_TRANSFER];
    const queued: QueuedPlan = { ...plan, storageAccount: undefined, storageAccountId: plan.storageAccount?.id };
    return this.s.d.ops.start('Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/recoveryPoints/restore/action', this.s.itemId(v, ref), async (opId) => {
      const job = await this.s.createJob({ vault: v, item, ref, operation: 'Restore', opId, userTriggered: true, tasks, bag, params: { rpId, recoveryType: plan.recoveryType, plan: queued } });
      await this.s.d.queue.send(QUEUE_RESTORE, { jobId: job.id }, { uniqueKey: `restore:${job.id}`, retryLimit: 2 });
      return { jobId: job.id };
    });
  }

  /**
   * Queue handler of a Restore job. A second attempt means the worker of the first one died mid-restore: what it
   * staged is removed and the job fails with UserErrorRestoreInterrupted (nothing it wrote is presented).
   */
  async runQueued(ctx: JobContext<{ jobId: string }>): Promise<void> {
    const job = await this.s.getJob(ctx.payload.jobId);
    if (!job || !['InProgress', 'Cancelling'].includes(job.status)) return;
    const params = JSON.parse(job.params_json) as { rpId: string; plan?: QueuedPlan };
    if (!params.plan) return this.s.finishJob(job.id, 'Failed', RESTORE_INTERRUPTED); // a restore of a version that ran them in-process
    const v = await this.s.vaultByNorm(job.vault_norm);
    const item = job.item_norm ? await this.s.db.selectFrom('recovery_items').selectAll().where('id_norm', '=', job.item_norm).executeTakeFirst() : undefined;
    if (!v || !item) return this.s.finishJob(job.id, 'Failed', recoveryErrors.itemNotFound(job.friendly_name));
    const rp = await this.s.getPoint(item.id_norm, params.rpId);
    if (!rp) return this.s.finishJob(job.id, 'Failed', recoveryErrors.rpNotFound(params.rpId));
    const { storageAccountId, ...rest } = params.plan;
    const plan: RestorePlan = { ...rest, storageAccount: storageAccountId ? await this.storage.getAccount(storageAccountId) : undefined };
    if (storageAccountId && !plan.storageAccount) return this.s.finishJob(job.id, 'Failed', restoreErrors.storageNotFound(storageAccountId));
    if (ctx.attempt > 1) return this.interrupted(job, item, rp, plan);
    try {
      await this.run(v, item, rp, this.s.openKeys(rp) as RpKeys | undefined, plan, job);
    } catch (e) {
      if (ctx.signal.aborted) throw e; // lease lost or shutting down: the next attempt fails it with a code
      await this.s.finishJob(job.id, 'Failed', this.mapError(e, plan, rp));
    }
  }

  /** The queue gave the job up (its workers kept dying): fail it with a code. */
  async deadRestore(jobId: string): Promise<void> {
    const job = await this.s.getJob(jobId);
    if (!job || !['InProgress', 'Cancelling'].includes(job.status)) return;
    await this.s.finishJob(job.id, 'Failed', RESTORE_INTERRUPTED);
  }

  private async interrupted(job: JobRow, item: ItemRow, rp: PointRow, plan: RestorePlan): Promise<void> {
    await rm(this.tmpDir(job.id), { recursive: true, force: true }).catch(() => undefined);
    await rmdir(this.tmpDir()).catch(() => undefined); // the parent too, when no other restore uses it
    if (plan.storageAccount) await this.storage.discardStaging(plan.storageAccount.name, this.containerFor(job, plan, rp, item)).catch(() => undefined);
    await this.s.finishJob(job.id, 'Failed', RESTORE_INTERRUPTED);
  }

  /** The staging container of a restore job (the same name on every attempt). */
  private containerFor(job: JobRow, plan: RestorePlan, rp: PointRow, item: ItemRow): string {
    const vmRec = JSON.parse(rp.vm_json) as RpVm;
    const vmName = plan.targetVm?.name ?? vmRec.name ?? parseVmId(item.vm_id)?.vmName ?? item.vm_name;
    return `${lc(vmName).replace(/[^a-z0-9-]/g, '-').replace(/-+/g, '-').replace(/^-|-$/g, '').slice(0, 40) || 'vm'}-restore-${job.id.slice(0, 8)}`;
  }

  private mapError(e: unknown, plan: RestorePlan, rp: PointRow): unknown {
    if (e instanceof ArmError) return e;
    const msg = (e as Error)?.message ?? String(e);
    const code = (e as NodeJS.ErrnoException)?.code ?? ((e as { cause?: NodeJS.ErrnoException })?.cause?.code);
    if (code === 'ENOSPC' || code === 'EDQUOT') return restoreErrors.storageFull(plan.storageAccount?.name ?? 'data directory', 'no space left on the device');
    if (e instanceof EngineError && (e.code === 'UserErrorChunkCorrupted' || e.code === 'UserErrorChunkMissing')) return restoreErrors.chunk(e.code, e.message, rp.id, '');
    return { errorCode: 500003, errorString: `Restore failed: ${msg}. Nothing was kept as restored.`, errorTitle: 'RestoreFailed', recommendations: ['Retry the restore; if it keeps failing, check the server log.'] };
  }

  tmpDir(jobId?: string): string {
    return path.join(this.s.d.dataDir, 'restore-tmp', ...(jobId ? [jobId] : []));
  }

  private async run(v: VaultRow, item: ItemRow, rp: PointRow, keys: RpKeys | undefined, plan: RestorePlan, job: JobRow): Promise<void> {
    const s = this.s;
    const compute = s.d.compute;
    const storage = plan.storageAccount ? this.storage : undefined;
    await this.s.setJobTask(job.id, TASK_TRANSFER, { status: 'InProgress', startTime: Date.now(), progressPercentage: 0 });
    // Keys may have vanished since the request: check again before writing anything that depends on them.
    if (plan.enc) await this.checkKeys(v, item, rp.id, plan.enc, plan.caller);

    const vmRec = this.s.d.keyvault.urls.canonicalDeep(JSON.parse(rp.vm_json) as RpVm);
    const srcRef = parseVmId(item.vm_id);
    const vmName = plan.targetVm?.name ?? vmRec.name ?? srcRef?.vmName ?? item.vm_name;
    const source: VmSource = { name: vmName, location: vmRec.location ?? plan.targetRg?.location ?? 'local', osType: vmRec.osType ?? 'Linux', vmSize: vmRec.hardwareProfile?.vmSize ?? 'Standard_DS1_v2', computerName: vmRec.osProfile?.computerName };
    const all = JSON.parse(rp.disks_json) as DiskRecord[];
    const disks = all.filter((d) => d.os || !plan.luns || plan.luns.includes(d.lun!));
    const short = job.id.slice(0, 8);
    const container = this.containerFor(job, plan, rp, item);
    const toBlobs = plan.recoveryType === 'RestoreDisks' && !plan.targetRg;
    const { store, keys: storeKeys, dir } = await s.vaultStore(v);
    const tmp = this.tmpDir(job.id);
    const staging = storage ? await storage.stageContainer(plan.storageAccount!.name, container) : undefined;
    const createdDisks: string[] = [];
    let published = false;
    try {
      await mkdir(tmp, { recursive: true, mode: 0o700 });
      let free = storage ? await storage.freeBytes(plan.storageAccount!) : undefined;
      const total = disks.reduce((a, d) => a + d.sizeBytes, 0);
      let doneBefore = 0;
      let last = 0;
      const images: { d: DiskRecord; file: string; format: 'raw' | 'luks1'; blob?: string }[] = [];
      for (const d of disks) {
        const manifest = await readPointManifest({ store, dir }, storeKeys, rp, d); // authenticated: a swapped or rolled-back manifest fails here
        const blob = toBlobs ? `${d.name}.img` : undefined;
        const file = blob ? path.join(staging!, blob) : path.join(tmp, `${d.os ? 'os' : `lun${d.lun}`}.img`);
        const ac = new AbortController();
        let full: string | undefined;
        if (blob && free !== undefined && manifest.diskSize > free) {
          // The quota is checked as bytes land: the restore writes until the account is full, then stops.
          full = `${manifest.diskSize} bytes needed for disk '${d.name}', ${free} free under the account's quota`;
        }
        try {
          await restoreImage({
            store, keys: storeKeys, manifest, target: file, signal: ac.signal,
            onProgress: (pr) => {
              if (full && pr.bytesDone > (free ?? 0)) ac.abort(new Error('full'));
              const now = Date.now();
              if (now - last < 500) return;
              last = now;
              const pct = total ? Math.min(99, Math.floor(((doneBefore + pr.bytesDone) / total) * 100)) : 0;
              void this.s.setJobTask(job.id, TASK_TRANSFER, { progressPercentage: pct }, { progress: pct }).catch(() => undefined);
            },
            progressIntervalMs: 50,
          });
        } catch (e) {
          if (full && ac.signal.aborted) throw restoreErrors.storageFull(plan.storageAccount!.name, full);
          if (e instanceof EngineError && (e.code === 'UserErrorChunkCorrupted' || e.code === 'UserErrorChunkMissing')) throw restoreErrors.chunk(e.code, e.message, rp.id, d.name);
          throw e;
        }
        if (full) throw restoreErrors.storageFull(plan.storageAccount!.name, full);
        if (free !== undefined && blob) free -= manifest.diskSize;
        const fmt = (d as DiskRecord & { format?: 'raw' | 'luks1' }).format ?? (await isLuks(file) ? 'luks1' : 'raw');
        images.push({ d, file, format: fmt, blob });
        doneBefore += d.sizeBytes;
      }

      // Managed disks (RestoreDisks with targetResourceGroupId, AlternateLocation): created only from complete images.
      const restored: RestoredDisk[] = [];
      if (plan.recoveryType === 'OriginalLocation') {
        for (const im of images) await compute.replaceDiskImage(im.d.diskId, im.file, im.format);
      } else {
        for (const im of images) {
          if (im.blob) {
            restored.push({ name: im.d.name, os: im.d.os, lun: im.d.lun, sizeBytes: im.d.sizeBytes, format: im.format, blobUri: storage!.blobUrl(plan.origin, plan.storageAccount!.name, container, im.blob) });
            continue;
          }
          const rg = plan.targetRg!;
          const base = plan.targetVm?.name ?? `${vmName}-restored-${short}`;
          const name = `${base}-${im.d.os ? 'osdisk' : `datadisk${im.d.lun}`}`.slice(0, 80);
          const { disk } = await compute.createOrUpdateDisk(rg.sub, rg.name, name, {
            location: source.location, createOption: 'Import', sourcePath: im.file, moveSource: true, internal: true, osType: im.d.os ? (source.osType as OsType) : undefined,
            encryptionSettingsCollection: plan.enc && im.format === 'luks1' ? encryptionSettingsCollection(plan.enc) : undefined,
            props: { restoredFrom: { recoveryPointId: rp.id, jobId: job.id } },
          });
          createdDisks.push(disk.id);
          restored.push({ name: disk.name, os: im.d.os, lun: im.d.lun, sizeBytes: im.d.sizeBytes, format: im.format, diskId: disk.id });
        }
      }

      // The VM config, the encryption info and the template, beside the disks (in the staging container).
      const outBag: Record<string, string> = {};
      if (storage && staging) {
        const configBlob = `config-${container}.json`;
        const templateBlob = `azuredeploy-${container}.json`;
        const encBlob = keys?.bekDetails ? `encryption-info-${container}.json` : undefined;
        const files: [string, unknown][] = [
          [configBlob, vmConfigJson(source, restored, plan.enc, { ...vmRec, disks: all.map((d) => ({ name: d.name, lun: d.lun, os: d.os, sizeBytes: d.sizeBytes })) })],
          [templateBlob, armTemplate(source, restored, plan.enc, plan.storageAccount!.id)],
          ...(encBlob ? [[encBlob, encryptionInfoJson(keys!)] as [string, unknown]] : []),
        ];
        for (const [name, content] of files) {
          const text = JSON.stringify(content, null, 2);
          if (free !== undefined) {
            if (Buffer.byteLength(text) > free) throw restoreErrors.storageFull(plan.storageAccount!.name, `${Buffer.byteLength(text)} bytes needed for '${name}', ${free} free under the account's quota`);
            free -= Buffer.byteLength(text);
          }
          await writeFile(path.join(staging, name), text, { mode: 0o600 });
        }
        await storage.publishContainer(plan.storageAccount!.name, container);
        published = true;
        const url = (b: string) => storage.blobUrl(plan.origin, plan.storageAccount!.name, container, b);
        Object.assign(outBag, {
          'Target Storage Account Name': plan.storageAccount!.name,
          'Config Blob Container Name': container,
          'Config Blob Name': configBlob,
          'Config Blob Uri': url(configBlob),
          'Template Blob Uri': url(templateBlob),
          ...(encBlob ? { 'Encryption Info Blob Name': encBlob, 'Encryption Info Blob Uri': url(encBlob) } : {}),
        });
      }
      restored.forEach((r) => {
        const label = r.os ? 'OS Disk' : `Data Disk (lun ${r.lun})`;
        if (r.blobUri) outBag[`${label} Blob Uri`] = r.blobUri;
        if (r.diskId) outBag[`${label} Id`] = r.diskId;
      });
      if (plan.enc) Object.assign(outBag, { 'Secret Url': plan.enc.secretUrl, ...(plan.enc.kekUrl ? { 'Key Url': plan.enc.kekUrl } : {}) });
      const tEnd = Date.now();
      await this.s.setJobTask(job.id, TASK_TRANSFER, { status: 'Completed', endTime: tEnd, progressPercentage: 100 }, { bag: outBag, progress: plan.recoveryType === 'AlternateLocation' ? 90 : 99 });

      if (plan.recoveryType === 'AlternateLocation') {
        await this.s.setJobTask(job.id, TASK_VM, { status: 'InProgress', startTime: Date.now() });
        const os = restored.find((r) => r.os)!;
        const tv = plan.targetVm!;
        const { vm } = await compute.createOrUpdateVm(tv.sub, tv.rg, tv.name, {
          location: source.location, vmSize: source.vmSize, osType: source.osType as OsType,
          osDisk: { createOption: 'Attach', managedDiskId: os.diskId, ...(plan.enc ? { encryptionSettings: vmEncryptionSettings(plan.enc) } : {}) },
          dataDisks: restored.filter((r) => !r.os).map((r) => ({ lun: r.lun!, createOption: 'Attach', managedDiskId: r.diskId })),
          osProfile: { computerName: source.computerName ?? tv.name, adminUsername: 'azureuser', linuxConfiguration: { provisionVMAgent: true } },
        });
        createdDisks.length = 0; // attached to the new VM: kept
        await this.s.setJobTask(job.id, TASK_VM, { status: 'Completed', endTime: Date.now() }, { bag: { 'Target VM Id': vm.id } });
      }
      createdDisks.length = 0;
      await s.finishJob(job.id, 'Completed');
    } catch (e) {
      for (const id of createdDisks) await compute.deleteDisk(id).catch(() => undefined);
      if (storage && !published) await storage.discardStaging(plan.storageAccount!.name, container).catch(() => undefined);
      throw e;
    } finally {
      await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
      await rmdir(this.tmpDir()).catch(() => undefined); // the parent too, when no other restore uses it
    }
  }

  /**
   * Start-up: staging containers and temp images of restores a killed process left. Restores still InProgress are
   * skipped (another worker may be running them; their next attempt removes what a dead one left).
   */
  async cleanLeftovers(): Promise<void> {
    const running = (await this.s.db.selectFrom('recovery_jobs').select('id').where('operation', '=', 'Restore').where('status', 'in', ['InProgress', 'Cancelling']).execute()).map((j) => j.id);
    for (const e of await readdir(this.tmpDir()).catch(() => [] as string[])) {
      if (!running.includes(e)) await rm(this.tmpDir(e), { recursive: true, force: true }).catch(() => undefined);
    }
    await rmdir(this.tmpDir()).catch(() => undefined);
    const shorts = running.map((id) => `-restore-${id.slice(0, 8)}`);
    await this.s.d.storage?.cleanLeftovers((container) => shorts.some((x) => container.endsWith(x)));
  }

  // ---- restore keys and secrets ------------------------------------------------------------------------------------
  /**
   * Restores the recovery point's KEK (keys/restore from its backup blob) and then its BEK (set with the wrapped value,
   * content type `Wrapped BEK` and the ADE tags, DiskEncryptionKeyEncryptionKeyURL = the restored key's URL) into
   * the chosen vault, as the caller. BEK-only: secrets/restore from the secret backup blob. The caller needs read on
   * the source VM (the same as for seeing keyAndSecret) and, checked by Key Vault itself, keys restore/get and secrets
   * set/restore on the target vault.
   */
  async restoreKeys(v: VaultRow, item: ItemRow, rpId: string, body: unknown, caller: Caller) {
    await requireAccess(this.s.d.identity, caller, keyNeeds(item.vm_id));
    if (!isObj(body)) throw armErrors.invalidContent('The request body must be {"targetKeyVaultId": "/subscriptions/.../providers/Microsoft.KeyVault/vaults/{name}"} (or "targetKeyVault": "{name}").');
    const target = str(body, 'targetKeyVaultId', 'targetKeyVaultId') ?? str(body, 'targetKeyVault', 'targetKeyVault');
    if (!target) throw armErrors.invalidContent("'targetKeyVaultId' is required: the key vault (of this installation) to restore the key and secret into.", 'targetKeyVaultId');
    const rp = await this.point(item, rpId);
    const keys = this.s.openKeys(rp) as RpKeys | undefined;
    if (rp.encrypted !== 1 || !keys?.bekDetails) throw restoreErrors.notEncrypted(rpId);
    const kv = this.s.d.keyvault;
    const vault = target.startsWith('/') ? await kv.getVault(target) : await kv.getVaultByName(target);
    if (!vault) throw restoreErrors.kvNotFound(target, this.fixCommand(v, item, rpId, target.split('/').pop()));
    const wrap = (e: unknown) => {
      if (e instanceof KeyVaultError) {
        const status = e.status === 403 ? 403 : e.status === 404 ? 404 : e.status === 409 ? 409 : 400;
        return new RecoveryError(status, e.status === 403 ? 'KeyVaultAccessDenied' : e.code, `Key Vault '${vault.name}': ${e.message}`, {
          recommendation: e.status === 403 ? `Grant yourself keys restore/get and secrets set/restore on the vault: rsvault keyvault set-policy -n ${vault.name} --object-id ${caller.objectId} --key-permissions get restore --secret-permissions get set restore` : undefined,
        });
      }
      return e;
    };
    let keyUrl: string | undefined;
    const k = keys.kekDetails;
    if (k) {
      const ko = parseObjectUrl(k.keyUrl)!;
      try {
        const kb = await kv.restoreKey(caller, vault.id, k.keyBackupData);
        keyUrl = this.url(kb.key.kid ?? '');
      } catch (e) {
        if (!(e instanceof KeyVaultError && e.status === 409)) throw wrap(e);
        // The name exists: fine when it holds the backed-up version (restored before), else a conflict.
        try {
          const kb = await kv.getKey(caller, vault.id, ko.name, ko.version);
          keyUrl = this.url(kb.key.kid ?? '');
        } catch (e2) {
          if (e2 instanceof KeyVaultError && e2.status === 404) throw restoreErrors.keyConflict(ko.name, vault.name, ko.version ?? '');
          throw wrap(e2);
        }
      }
    }
    const b = keys.bekDetails;
    const so = parseObjectUrl(b.secretUrl)!;
    let secretUrl: string;
    try {
      if (k) {
        const tags = { ...(b.tags ?? {}), DiskEncryptionKeyEncryptionKeyURL: keyUrl!, DiskEncryptionKeyEncryptionAlgorithm: b.tags?.DiskEncryptionKeyEncryptionAlgorithm ?? 'RSA-OAEP', DiskEncryptionKeyFileName: b.tags?.DiskEncryptionKeyFileName ?? 'LinuxPassPhraseFileName', MachineName: b.tags?.MachineName ?? item.vm_name };
        const sb = await kv.setSecret(caller, vault.id, so.name, { value: b.secretData, contentType: 'Wrapped BEK', tags });
        secretUrl = this.url(sb.id ?? '');
      } else {
        try {
          const sb = await kv.restoreSecret(caller, vault.id, b.secretBackupData ?? '');
          secretUrl = this.url(`${(sb.id ?? '').replace(/\/[^/]+$/, '')}/${so.version}`);
        } catch (e) {
          if (!(e instanceof KeyVaultError && e.status === 409)) throw e;
          const sb = await kv.setSecret(caller, vault.id, so.name, { value: b.secretData, contentType: b.contentType ?? 'BEK', tags: b.tags });
          secretUrl = this.url(sb.id ?? '');
        }
      }
    } catch (e) {
      throw wrap(e);
    }
    const rg = groupOf(v);
    return {
      keyVaultId: vault.id,
      ...(keyUrl ? { keyUrl } : {}),
      secretUrl,
      encryptionDetails: { encryptionEnabled: true, ...(keyUrl ? { kekUrl: keyUrl, kekVaultId: vault.id } : {}), secretKeyUrl: secretUrl, secretKeyVaultId: vault.id },
      nextCommand: `rsvault backup restore restore-disks --vault-name ${v.name} -g ${rg} --container-name ${item.vm_name} --item-name ${item.vm_name} --rp-name ${rpId} --storage-account <account>${keyUrl ? ` --kek-url ${keyUrl}` : ''} --secret-url ${secretUrl} --key-vault-id ${vault.id}`,
    };
  }
}

async function isLuks(file: string): Promise<boolean> {
  const { open } = await import('node:fs/promises');
  const fh = await open(file, 'r');
  try {
    const b = Buffer.alloc(6);
    await fh.read(b, 0, 6, 0);
    return b.equals(Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]));
  } finally {
    await fh.close();
  }
}

/** The vault's resource group as the user spelled it (the row keeps it lower-cased for lookups). */
function groupOf(v: VaultRow): string {
  return parseResourceId(v.id)?.resourceGroup ?? v.resource_group;
}

/** What a restore needs on its target resource group: managed disks (RestoreDisks), or disks and a VM (AlternateLocation). */
function targetGroupNeeds(groupId: string, recoveryType: RecoveryType): Need[] {
  const actions = recoveryType === 'AlternateLocation' ? [GROUP_WRITE, VM_WRITE, VM_READ, DISK_WRITE] : [GROUP_WRITE, DISK_WRITE];
  return actions.map((action) => ({ action, scope: groupId }));
}
