/**
 * Recovery Services use cases: vaults (+ DefaultPolicy, storage config, vault config), policies, discovery,
 * protection with the encrypted-VM preflight, jobs, recovery points, retention and scheduled backups.
 * The data path of a backup job lives in backup.ts; ARM shapes in views.ts.
 */
import { randomUUID, createHash } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { ArmError, armErrors, HttpError } from '../platform/http/errors.js';
import type { AsyncOperations } from '../platform/http/async-ops.js';
import type { Logger } from '../platform/log.js';
import type { Sealer } from '../platform/crypto.js';
import type { Caller } from '../platform/auth/index.js';
import { keyNeeds, mayAccess, readNeeds } from './access.js';
import type { Clock, JobQueue, ScheduleSource } from '../platform/jobs/index.js';
import type { Locks } from '../platform/db/locks.js';
import { retryOnUniqueViolation } from '../platform/db/index.js';
import type { ResourceService } from '../resources/index.js';
import type { IdentityService } from '../identity/index.js';
import { KeyVaultError, formatMissing, parseObjectUrl, type KeyVaultService, type KvPrincipal } from '../keyvault/index.js';
import type { ComputeService, Vm } from '../compute/index.js';
import type { StorageService } from '../storage/index.js';
import { FsChunkStore, generateStoreKeys, storeKeysFromBytes, storeKeysToBytes, type ChunkStore, type StoreKeys } from '../engine/index.js';
import { defaultPolicy, scheduleCron, validatePolicy, type IaasVmPolicy } from './policy.js';
import { RecoveryError, recoveryErrors, canonicalCode } from './errors.js';
import { containerName, itemName, normLocation, requireVaultName, shortContainerName, SOFT_DELETE_DAYS, VAULT_TYPE, type VmRef } from './model.js';
import type { RecoveryStore, RecoveryTables } from './store.js';

export type VaultRow = RecoveryTables['recovery_vaults'];
export type ItemRow = RecoveryTables['recovery_items'];
export type JobRow = RecoveryTables['recovery_jobs'];
export type PointRow = RecoveryTables['recovery_points'];
export type PolicyRow = RecoveryTables['recovery_policies'];

export interface RecoveryDeps {
  store: RecoveryStore;
  resources: ResourceService;
  identity: IdentityService;
  keyvault: KeyVaultService;
  compute: ComputeService;
  /** Restore targets (storage accounts); absent = restores to storage accounts are unavailable. */
  storage?: StorageService | undefined;
  ops: AsyncOperations;
  queue: JobQueue;
  sealer: Sealer;
  dataDir: string;
  log: Logger;
  clock: Clock;
  /**
   * Opens a vault's chunk store (primary, plus the secondary for GeoRedundant vaults) as the server is configured;
   * absent = the embedded fs layout under the vault's directory.
   */
  chunkStores?: {
    open(uid: string, o: { localDir: string; geo: boolean }): Promise<ChunkStore>;
    removeVault(uid: string): Promise<void>;
  } | undefined;
  /** Cluster-wide locks in the metadata database (GC of a vault runs once across all processes). */
  locks: Locks;
}

export interface JobTask {
  taskId: string;
  status: 'NotStarted' | 'InProgress' | 'Completed' | 'Failed' | 'Cancelled';
  startTime?: number | undefined;
  endTime?: number | undefined;
  progressPercentage?: number | undefined;
}

export interface JobError {
  errorCode: number;
  errorString: string;
  errorTitle: string;
  recommendations: string[];
}

/** What the preflight learnt about the VM: its disks and, when encrypted, where its BEK and KEK live. */
export interface VmPlan {
  vm: Vm;
  encrypted: boolean;
  bek?: { secretUrl: string; secretVaultId: string } | undefined;
  kek?: { keyUrl: string; keyVaultId: string } | undefined;
}

export const QUEUE_BACKUP = 'recovery.backup';
export const QUEUE_SCHEDULED = 'recovery.scheduled-backup';
export const QUEUE_RETENTION = 'recovery.retention';
/** A vault's Verify job (verify-job.ts), and its scheduler slots. */
export const QUEUE_VERIFY = 'recovery.verify';
export const QUEUE_VERIFY_SCHEDULED = 'recovery.scheduled-verify';
export const QUEUE_RESTORE = 'recovery.restore';

const lc = (s: string) => s.toLowerCase();
export const vaultIdOf = (sub: string, rg: string, name: string) => `/subscriptions/${sub}/resourceGroups/${rg}/providers/Microsoft.RecoveryServices/vaults/${name}`;
const etagOf = (t: number) => `W/"datetime'${encodeURIComponent(new Date(t).toISOString())}'"`;
export const itemKey = (vaultNorm: string, ref: VmRef) => `${vaultNorm}|${lc(itemName(ref))}`;
export const refOfItem = (r: ItemRow): VmRef => ({ resourceGroup: r.vm_rg, vmName: r.vm_name, classic: r.classic === 1 });

type VaultPut = { location: string; tags?: Record<string, string> | undefined; sku?: Record<string, unknown> | undefined; identity?: unknown; properties?: Record<string, unknown> | undefined };

export class RecoveryService {
  readonly db: RecoveryStore['db'];
  private readonly stores = new Map<string, Promise<{ store: ChunkStore; keys: StoreKeys; dir: string }>>();
  /** Running backup jobs of this process (cancel aborts them at once; other processes see cancel_requested). */
  readonly running = new Map<string, AbortController>();
  private readonly jobChains = new Map<string, Promise<unknown>>();

  constructor(readonly d: RecoveryDeps) {
    this.db = d.store.db;
  }

  now(): number {
    return this.d.clock.now();
  }

  // ---- vaults ----------------------------------------------------------------------------------------------------
  async getVault(sub: string, rg: string, name: string): Promise<VaultRow | undefined> {
    return this.db.selectFrom('recovery_vaults').selectAll().where('id_norm', '=', lc(vaultIdOf(sub, rg, name))).executeTakeFirst();
  }

  async requireVault(sub: string, rg: string, name: string): Promise<VaultRow> {
    await this.d.resources.requireGroup(sub, rg);
    const v = await this.getVault(sub, rg, name);
    if (!v) throw armErrors.notFound(VAULT_TYPE, name, rg);
    return v;
  }

  async vaultByNorm(norm: string): Promise<VaultRow | undefined> {
    return this.db.selectFrom('recovery_vaults').selectAll().where('id_norm', '=', norm).executeTakeFirst();
  }

  async listVaults(sub: string, rg?: string): Promise<VaultRow[]> {
    this.d.resources.requireSubscription(sub);
    let q = this.db.selectFrom('recovery_vaults').selectAll().where('subscription_id', '=', sub);
    if (rg) {
      await this.d.resources.requireGroup(sub, rg);
      q = q.where('resource_group', '=', lc(rg));
    }
    return q.orderBy('id_norm').execute();
  }

  /** Create-or-update; concurrent PUTs of one new vault (any process) create it once, the others update it. */
  putVault(sub: string, rg: string, name: string, b: VaultPut): Promise<{ vault: VaultRow; created: boolean }> {
    return retryOnUniqueViolation(() => this.putVaultOnce(sub, rg, name, b));
  }

  private async putVaultOnce(sub: string, rg: string, name: string, b: VaultPut): Promise<{ vault: VaultRow; created: boolean }> {
    const g = await this.d.resources.requireGroup(sub, rg);
    requireVaultName(name);
    const skuName = String(b.sku?.name ?? 'Standard');
    if (!['standard', 'rs0'].includes(lc(skuName))) throw armErrors.invalidContent(`The sku '${skuName}' is not supported: use 'Standard' or 'RS0'.`, 'sku.name');
    const location = normLocation(b.location);
    const t = Date.now();
    const existing = await this.getVault(sub, rg, name);
    const props = { ...(b.properties ?? {}) };
    delete props.provisioningState;
    if (existing) {
      if (normLocation(existing.location) !== location) {
        throw new ArmError(409, 'LocationNotAvailableForResourceType', `The vault '${name}' already exists in location '${existing.location}'; a vault cannot move to '${b.location}'.`, { recommendation: `Use location '${existing.location}', or create a vault with another name.` });
      }
      await this.db
        .updateTable('recovery_vaults')
        .set({ tags_json: JSON.stringify(b.tags ?? JSON.parse(existing.tags_json)), sku_json: JSON.stringify({ name: skuName, ...(b.sku?.tier ? { tier: b.sku.tier } : {}) }), identity_json: b.identity ? JSON.stringify(b.identity) : existing.identity_json, props_json: JSON.stringify({ ...JSON.parse(existing.props_json), ...props }), etag: etagOf(t), updated_at: t })
        .where('id_norm', '=', existing.id_norm)
        .execute();
      return { vault: (await this.getVault(sub, rg, name))!, created: false };
    }
    const id = vaultIdOf(sub, g.name, name);
    const keys = generateStoreKeys();
    const sealedKeys = this.d.sealer.seal(storeKeysToBytes(keys), `recovery-vault-store-keys:${lc(id)}`);
    await this.db.transaction().execute(async (tx) => {
      await tx
        .insertInto('recovery_vaults')
        .values({
          id_norm: lc(id), id, subscription_id: sub, resource_group: lc(g.name), name, location, tags_json: JSON.stringify(b.tags ?? {}),
          sku_json: JSON.stringify({ name: skuName }), identity_json: b.identity ? JSON.stringify(b.identity) : null, props_json: JSON.stringify(props), etag: etagOf(t),
          uid: randomUUID(), storage_type: 'GeoRedundant', cross_region_restore: 0, soft_delete: 'Enabled', enhanced_security: 'Disabled', bek_only: 'Disabled',
          store_keys: sealedKeys, created_at: t, updated_at: t,
        })
        .execute();
      // DefaultPolicy: daily at 19:00 UTC... spread by vault so not every vault fires at once? Azure picks a time; keep it stable.
      await tx.insertInto('recovery_policies').values({ vault_norm: lc(id), name_norm: 'defaultpolicy', name: 'DefaultPolicy', props_json: JSON.stringify(defaultPolicy()), created_at: t, updated_at: t }).execute();
    });
    await this.d.resources.index({ id, subscriptionId: sub, resourceGroup: g.name, type: VAULT_TYPE, name, location, tags: b.tags });
    return { vault: (await this.getVault(sub, rg, name))!, created: true };
  }

  async patchVault(v: VaultRow, b: { tags?: Record<string, string> | undefined; identity?: Record<string, unknown> | undefined; properties?: Record<string, unknown> | undefined }): Promise<VaultRow> {
    const t = Date.now();
    const props = { ...JSON.parse(v.props_json), ...(b.properties ?? {}) } as Record<string, unknown>;
    delete props.provisioningState;
    await this.db.updateTable('recovery_vaults').set({ tags_json: JSON.stringify(b.tags ?? JSON.parse(v.tags_json)), ...(b.identity ? { identity_json: JSON.stringify(b.identity) } : {}), props_json: JSON.stringify(props), etag: etagOf(t), updated_at: t }).where('id_norm', '=', v.id_norm).execute();
    return (await this.vaultByNorm(v.id_norm))!;
  }

  /** Items that block vault deletion and storage changes: everything not fully deleted. */
  async activeItemCount(vaultNorm: string): Promise<number> {
    const r = await this.db.selectFrom('recovery_items').select((eb) => eb.fn.countAll<number>().as('n')).where('vault_norm', '=', vaultNorm).executeTakeFirst();
    return Number(r?.n ?? 0);
  }

  async deleteVault(v: VaultRow, force = false): Promise<void> {
    if (!force && (await this.activeItemCount(v.id_norm)) > 0) throw recoveryErrors.vaultHasItems(v.name, 'The vault cannot be deleted');
    await this.db.transaction().execute(async (tx) => {
      for (const t of ['recovery_points', 'recovery_items', 'recovery_policies', 'recovery_jobs', 'recovery_encryption_configs'] as const) await tx.deleteFrom(t).where('vault_norm', '=', v.id_norm).execute();
      await tx.deleteFrom('recovery_vaults').where('id_norm', '=', v.id_norm).execute();
    });
    await this.d.resources.unindex(v.id);
    this.stores.delete(v.id_norm);
    rmSync(this.vaultDir(v), { recursive: true, force: true });
    await this.d.chunkStores?.removeVault(v.uid).catch((e: unknown) => this.d.log.warn({ err: e, vault: v.name }, 'could not remove the vault\'s objects from the chunk store'));
  }

  vaultDir(v: VaultRow): string {
    return path.join(this.d.dataDir, 'vaults', v.uid);
  }

  /**
   * The vault's chunk store (manifests are its metadata objects `manifests/<rp>/<file>`) and keys (unsealed with
   * the master key). GeoRedundant vaults replicate to the secondary store when the server has one.
   */
  vaultStore(v: VaultRow): Promise<{ store: ChunkStore; keys: StoreKeys; dir: string }> {
    let p = this.stores.get(v.id_norm);
    if (!p) {
      p = (async () => {
        const dir = this.vaultDir(v);
        mkdirSync(path.join(dir, 'manifests'), { recursive: true, mode: 0o700 });
        const raw = this.d.sealer.open(v.store_keys, `recovery-vault-store-keys:${v.id_norm}`);
        const keys: StoreKeys = storeKeysFromBytes(raw); // 64 bytes: a SHA-256 store of before BLAKE3
        const geo = v.storage_type === 'GeoRedundant' || v.storage_type === 'ReadAccessGeoZoneRedundant';
        const store = this.d.chunkStores ? await this.d.chunkStores.open(v.uid, { localDir: dir, geo }) : await FsChunkStore.open(path.join(dir, 'store'), { metaDir: dir });
        return { store, keys, dir };
      })();
      p.catch(() => this.stores.delete(v.id_norm));
      this.stores.set(v.id_norm, p);
    }
    return p;
  }

  async setStorageConfig(v: VaultRow, b: { storageType?: string | undefined; storageModelType?: string | undefined; crossRegionRestoreFlag?: boolean | undefined }): Promise<VaultRow> {
    const want = b.storageType ?? b.storageModelType;
    const allowed = ['GeoRedundant', 'LocallyRedundant', 'ZoneRedundant', 'ReadAccessGeoZoneRedundant'];
    let storageType = v.storage_type;
    if (want !== undefined) {
      const hit = allowed.find((a) => lc(a) === lc(want));
      if (!hit) throw new ArmError(400, 'BMSUserErrorInvalidInput', `The storage type '${want}' is not supported: use one of ${allowed.join(', ')}.`, { target: 'properties.storageType' });
      storageType = hit;
    }
    if (storageType !== v.storage_type && (await this.activeItemCount(v.id_norm)) > 0) {
      throw recoveryErrors.vaultHasItems(v.name, `The storage redundancy cannot change from ${v.storage_type} to ${storageType} (storageTypeState is Locked)`);
    }
    if (storageType !== v.storage_type) this.stores.delete(v.id_norm); // GRS ↔ LRS opens another store
    await this.db.updateTable('recovery_vaults').set({ storage_type: storageType, cross_region_restore: b.crossRegionRestoreFlag === undefined ? v.cross_region_restore : b.crossRegionRestoreFlag ? 1 : 0, updated_at: Date.now() }).where('id_norm', '=', v.id_norm).execute();
    return (await this.vaultByNorm(v.id_norm))!;
  }

  async setVaultConfig(v: VaultRow, b: Record<string, unknown>): Promise<VaultRow> {
    const state = (field: string, cur: string): string => {
      const x = b[field];
      if (x === undefined || x === null) return cur;
      if (typeof x !== 'string' || !['enabled', 'disabled', 'alwayson'].includes(lc(x))) throw new ArmError(400, 'BMSUserErrorInvalidInput', `properties.${field} must be 'Enabled' or 'Disabled' (got '${String(x)}').`, { target: `properties.${field}` });
      return lc(x) === 'enabled' ? 'Enabled' : lc(x) === 'alwayson' ? 'AlwaysON' : 'Disabled';
    };
    await this.db
      .updateTable('recovery_vaults')
      .set({ soft_delete: state('softDeleteFeatureState', v.soft_delete), enhanced_security: state('enhancedSecurityState', v.enhanced_security), bek_only: state('bekOnlyBackup', v.bek_only), updated_at: Date.now() })
      .where('id_norm', '=', v.id_norm)
      .execute();
    return (await this.vaultByNorm(v.id_norm))!;
  }

  // ---- policies --------------------------------------------------------------------------------------------------
  async listPolicies(v: VaultRow): Promise<PolicyRow[]> {
    return this.db.selectFrom('recovery_policies').selectAll().where('vault_norm', '=', v.id_norm).orderBy('name_norm').execute();
  }

  async getPolicy(v: VaultRow, name: string): Promise<PolicyRow | undefined> {
    return this.db.selectFrom('recovery_policies').selectAll().where('vault_norm', '=', v.id_norm).where('name_norm', '=', lc(name)).executeTakeFirst();
  }

  async requirePolicy(v: VaultRow, name: string): Promise<PolicyRow> {
    const p = await this.getPolicy(v, name);
    if (!p) throw recoveryErrors.policyNotFound(name);
    return p;
  }

  async putPolicy(v: VaultRow, name: string, properties: unknown): Promise<PolicyRow> {
    if (!/^[A-Za-z0-9][A-Za-z0-9_-]{2,149}$/.test(name)) throw armErrors.invalidName('backup policy', name, 'it must be 3-150 characters: letters, digits, hyphens and underscores, starting with a letter or digit.');
    const p = validatePolicy(properties);
    const t = Date.now();
    // One upsert (not "read, then insert or update"): concurrent PUTs of one new policy must not race on its key.
    await this.db
      .insertInto('recovery_policies')
      .values({ vault_norm: v.id_norm, name_norm: lc(name), name, props_json: JSON.stringify(p), created_at: t, updated_at: t })
      .onConflict((oc) => oc.columns(['vault_norm', 'name_norm']).doUpdateSet({ props_json: JSON.stringify(p), updated_at: t }))
      .execute();
    return (await this.getPolicy(v, name))!;
  }

  async deletePolicy(v: VaultRow, name: string): Promise<boolean> {
    const p = await this.getPolicy(v, name);
    if (!p) return false;
    const n = await this.db.selectFrom('recovery_items').select('id_norm').where('vault_norm', '=', v.id_norm).where('policy_name', '=', p.name_norm).executeTakeFirst();
    if (n) throw new RecoveryError(409, 'BMSUserErrorPolicyHasProtectedItems', `The policy '${p.name}' cannot be deleted: items are protected with it.`, { recommendation: 'Move the items to another policy (rsvault backup item set-policy) or stop their protection first.' });
    await this.db.deleteFrom('recovery_policies').where('vault_norm', '=', v.id_norm).where('name_norm', '=', p.name_norm).execute();
    return true;
  }

  async protectedCount(v: VaultRow, policyNorm: string): Promise<number> {
    const r = await this.db.selectFrom('recovery_items').select((eb) => eb.fn.countAll<number>().as('n')).where('vault_norm', '=', v.id_norm).where('policy_name', '=', policyNorm).executeTakeFirst();
    return Number(r?.n ?? 0);
  }

  /** Resolves a policyId (full ARM id or bare name) of this vault. */
  async policyFromId(v: VaultRow, policyId: string): Promise<PolicyRow> {
    const m = /\/backupPolicies\/([^/?]+)$/i.exec(policyId);
    const name = m ? decodeURIComponent(m[1]!) : policyId;
    if (m && !lc(policyId).startsWith(v.id_norm + '/')) throw new ArmError(400, 'BMSUserErrorInvalidInput', `The policy '${policyId}' belongs to another vault; use a policy of vault '${v.name}'.`, { target: 'properties.policyId' });
    return this.requirePolicy(v, name);
  }

  // ---- discovery -------------------------------------------------------------------------------------------------
  /**
   * The subscription's VMs in the vault's region (Resource Manager and classic), with their protection state. Not the
   * VMs another vault holds (Azure lists only what this vault could protect), and, for a `caller`, only the VMs it may
   * read (Microsoft.Compute/virtualMachines/read): a reader of the vault learns nothing of VMs in groups it cannot see.
   */
  async protectables(v: VaultRow, caller?: Caller): Promise<{ ref: VmRef; vmId: string; friendlyName: string; encrypted: boolean; protectionState: string }[]> {
    const items = await this.db.selectFrom('recovery_items').selectAll().execute();
    const protectedIds = new Set(items.filter((i) => i.vault_norm === v.id_norm && i.deferred_delete_at === null).map((i) => lc(i.vm_id)));
    const elsewhere = new Set(items.filter((i) => i.vault_norm !== v.id_norm).map((i) => lc(i.vm_id)));
    const visible = async (vmId: string) => !elsewhere.has(lc(vmId)) && (!caller || (await mayAccess(this.d.identity, caller, readNeeds(vmId))));
    const out: { ref: VmRef; vmId: string; friendlyName: string; encrypted: boolean; protectionState: string }[] = [];
    for (const vm of await this.d.compute.listVms(v.subscription_id)) {
      if (normLocation(vm.location) !== normLocation(v.location) || !(await visible(vm.id))) continue;
      const enc = (await this.d.compute.encryptionInfo(vm.id).catch(() => [])).some((e) => e.encrypted);
      out.push({ ref: { resourceGroup: vm.resourceGroup, vmName: vm.name, classic: false }, vmId: vm.id, friendlyName: vm.name, encrypted: enc, protectionState: protectedIds.has(lc(vm.id)) ? 'Protected' : 'NotProtected' });
    }
    for (const vm of await this.d.compute.listClassicVms(v.subscription_id)) {
      if (normLocation(vm.location) !== normLocation(v.location) || !(await visible(vm.id))) continue;
      out.push({ ref: { resourceGroup: vm.resourceGroup, vmName: vm.name, classic: true }, vmId: vm.id, friendlyName: vm.name, encrypted: classicEncrypted(vm.props), protectionState: protectedIds.has(lc(vm.id)) ? 'Protected' : 'NotProtected' });
    }
    return out;
  }

  /**
   * The vault (other than `v`) that holds an item of the VM — protected, stopped with its data kept, or soft-deleted:
   * as in Azure, a VM is protected by one vault at a time, until its backup data is deleted there.
   */
  async protectingVault(v: VaultRow, vmId: string, db: RecoveryStore['db'] = this.db): Promise<VaultRow | undefined> {
    const row = await db
      .selectFrom('recovery_items')
      .select('vault_norm')
      .where('vault_norm', '!=', v.id_norm)
      .where((eb) => eb(eb.fn<string>('lower', ['vm_id']), '=', lc(vmId)))
      .executeTakeFirst();
    return row ? db.selectFrom('recovery_vaults').selectAll().where('id_norm', '=', row.vault_norm).executeTakeFirst() : undefined;
  }

  /** Throws 409 UserErrorVmAlreadyProtectedInAnotherVault when another vault holds the VM. */
  async requireNotProtectedElsewhere(v: VaultRow, vmId: string, db: RecoveryStore['db'] = this.db): Promise<void> {
    const other = await this.protectingVault(v, vmId, db);
    if (other) throw recoveryErrors.protectedElsewhere(vmId, other.id);
  }

  // ---- protection: preflight -------------------------------------------------------------------------------------
  async bms(): Promise<KvPrincipal> {
    const p = await this.d.identity.backupManagementService();
    return { objectId: p.objectId, tenantId: p.tenantId, appId: p.appId };
  }

  /**
   * The ordered preflight: VM exists → Resource Manager model → agent ready → BEK+KEK (or BEK-only allowed) →
   * the Backup Management Service holds get/list/backup on the keys and secrets of every KEK/BEK vault →
   * no disk exclusion for encrypted VMs. Throws the ERRORS.md error of the first failing step.
   */
  async preflight(v: VaultRow, vmId: string, o: { diskExclusion?: boolean | undefined } = {}): Promise<VmPlan> {
    await this.requireNotProtectedElsewhere(v, vmId);
    const vm = await this.d.compute.getVm(vmId).catch(() => undefined);
    if (!vm) {
      const classic = await this.d.compute.getClassicVm(vmId).catch(() => undefined);
      if (classic) throw recoveryErrors.classicVm(vmId, classicEncrypted(classic.props));
      throw recoveryErrors.vmNotFound(vmId);
    }
    if (/\/providers\/Microsoft\.ClassicCompute\//i.test(vm.id)) throw recoveryErrors.classicVm(vmId, false);
    const agent = this.d.compute.agentStatusOf(vm);
    if (agent.status !== 'Ready') throw recoveryErrors.agent(vm.id, agent.status);
    const info = await this.d.compute.encryptionInfo(vm.id);
    const withBek = info.find((e) => e.secretUrl && e.secretVaultId);
    const plan: VmPlan = { vm, encrypted: !!withBek };
    if (withBek) {
      plan.bek = { secretUrl: withBek.secretUrl!, secretVaultId: withBek.secretVaultId! };
      const withKek = info.find((e) => e.keyUrl && e.keyVaultId);
      if (withKek) plan.kek = { keyUrl: withKek.keyUrl!, keyVaultId: withKek.keyVaultId! };
      else if (v.bek_only !== 'Enabled') throw recoveryErrors.bekOnly(vm.id);
      await this.checkKeyVaultAccess(plan);
      if (o.diskExclusion) throw recoveryErrors.diskExclusion(vm.id);
    }
    return plan;
  }

  /** get/list/backup on keys (KEK vault) and secrets (BEK vault) for the Backup Management Service. */
  async checkKeyVaultAccess(plan: VmPlan): Promise<void> {
    const bms = await this.bms();
    const needs = new Map<string, { ref: string; keys: string[]; secrets: string[] }>();
    const add = (ref: string, kind: 'keys' | 'secrets') => {
      const k = lc(ref);
      const e = needs.get(k) ?? { ref, keys: [], secrets: [] };
      e[kind] = ['get', 'list', 'backup'];
      needs.set(k, e);
    };
    if (plan.kek) add(plan.kek.keyVaultId, 'keys');
    if (plan.bek) add(plan.bek.secretVaultId, 'secrets');
    for (const n of needs.values()) {
      let missing: { keys: string[]; secrets: string[] };
      try {
        missing = await this.d.keyvault.hasPermissions(n.ref, bms.objectId, { keys: n.keys, secrets: n.secrets });
      } catch (e) {
        throw this.kvError(e, n.ref);
      }
      if (missing.keys.length || missing.secrets.length) throw recoveryErrors.kvPermissions(n.ref.split('/').pop()!, formatMissing(missing), bms.objectId);
    }
  }

  kvError(e: unknown, ref: string): Error {
    if (e instanceof RecoveryError) return e;
    if (e instanceof KeyVaultError) {
      if (e.code === 'VaultNotFound' || e.status === 404 && /vault/i.test(e.code)) return recoveryErrors.kvNotFound(ref);
      if (e.code === 'KeyNotFound' || e.code === 'SecretNotFound') return recoveryErrors.keyOrSecretMissing(ref);
      if (e.status === 403 || e.code === 'Forbidden') {
        const name = parseObjectUrl(ref)?.vaultName ?? ref.split('/').pop() ?? ref;
        return recoveryErrors.kvPermissions(name, e.message, '<Backup Management Service object id>');
      }
    }
    return e as Error;
  }

  // ---- protected items -------------------------------------------------------------------------------------------
  async getItem(v: VaultRow, ref: VmRef): Promise<ItemRow | undefined> {
    return this.db.selectFrom('recovery_items').selectAll().where('id_norm', '=', itemKey(v.id_norm, ref)).executeTakeFirst();
  }

  async requireItem(v: VaultRow, ref: VmRef): Promise<ItemRow> {
    const i = await this.getItem(v, ref);
    if (!i) throw recoveryErrors.itemNotFound(itemName(ref));
    return i;
  }

  async listItems(v: VaultRow): Promise<ItemRow[]> {
    return this.db.selectFrom('recovery_items').selectAll().where('vault_norm', '=', v.id_norm).orderBy('id_norm').execute();
  }

  itemId(v: VaultRow, ref: VmRef): string {
    return `${v.id}/backupFabrics/Azure/protectionContainers/${containerName(ref)}/protectedItems/${itemName(ref)}`;
  }

  // ---- jobs ------------------------------------------------------------------------------------------------------
  async createJob(j: { vault: VaultRow; item?: ItemRow | undefined; ref: VmRef; operation: string; opId?: string | undefined; triggerKey?: string | undefined; userTriggered: boolean; tasks?: string[] | undefined; bag?: Record<string, string> | undefined; params?: Record<string, unknown> | undefined; status?: string | undefined }): Promise<JobRow> {
    const id = j.triggerKey ? uuidFrom(j.triggerKey) : randomUUID();
    const row: JobRow = {
      id, vault_norm: j.vault.id_norm, item_norm: j.item?.id_norm ?? itemKey(j.vault.id_norm, j.ref), op_id: j.opId ?? null, trigger_key: j.triggerKey ?? null,
      operation: j.operation, status: j.status ?? 'InProgress', friendly_name: j.ref.vmName, container_name: shortContainerName(j.ref), user_triggered: j.userTriggered ? 1 : 0,
      start_time: Date.now(), end_time: null, error_json: null, tasks_json: JSON.stringify((j.tasks ?? []).map((t) => ({ taskId: t, status: 'NotStarted' }))),
      bag_json: JSON.stringify({ 'VM Name': j.ref.vmName, ...(j.bag ?? {}) }), params_json: JSON.stringify(j.params ?? {}), progress: 0, cancel_requested: 0,
    };
    await this.db.insertInto('recovery_jobs').values(row).onConflict((oc) => oc.column('trigger_key').doNothing()).execute();
    return (await this.getJob(id))!;
  }

  async getJob(id: string): Promise<JobRow | undefined> {
    return this.db.selectFrom('recovery_jobs').selectAll().where('id', '=', lc(id)).executeTakeFirst();
  }

  async updateJob(id: string, set: Partial<JobRow>): Promise<void> {
    await this.db.updateTable('recovery_jobs').set(set).where('id', '=', id).execute();
  }

  /**
   * Read-modify-write updates of one job row (tasks, property bag, status) made by this process run one after
   * another. On SQLite every query ran in issue order anyway; on PostgreSQL the pool runs them in parallel, and a
   * progress update issued before the final one could land after it and put back the old bag and tasks.
   */
  serialJob<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.jobChains.get(id) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.then(() => undefined, () => undefined);
    this.jobChains.set(id, tail);
    void tail.then(() => {
      if (this.jobChains.get(id) === tail) this.jobChains.delete(id);
    });
    return next;
  }

  /** One task of a job: `patch` merged into it, the property bag and progress updated, in the job's serial order. */
  setJobTask(jobId: string, taskId: string, patch: Partial<JobTask>, extra: { bag?: Record<string, string>; progress?: number } = {}): Promise<void> {
    return this.serialJob(jobId, async () => {
      const j = await this.getJob(jobId);
      if (!j) return;
      const tasks = (JSON.parse(j.tasks_json) as JobTask[]).map((t) => (t.taskId === taskId ? { ...t, ...patch } : t));
      const bag = extra.bag ? JSON.stringify({ ...JSON.parse(j.bag_json), ...extra.bag }) : j.bag_json;
      await this.updateJob(jobId, { tasks_json: JSON.stringify(tasks), bag_json: bag, ...(extra.progress !== undefined ? { progress: extra.progress } : {}) });
    });
  }

  finishJob(id: string, status: 'Completed' | 'Failed' | 'Cancelled' | 'CompletedWithWarnings', err?: unknown, tasksFix?: (t: JobTask[]) => JobTask[]): Promise<void> {
    return this.serialJob(id, () => this.finishJobNow(id, status, err, tasksFix));
  }

  private async finishJobNow(id: string, status: 'Completed' | 'Failed' | 'Cancelled' | 'CompletedWithWarnings', err?: unknown, tasksFix?: (t: JobTask[]) => JobTask[]): Promise<void> {
    const j = await this.getJob(id);
    if (!j) return;
    const t = Date.now();
    let tasks = JSON.parse(j.tasks_json) as JobTask[];
    tasks = tasks.map((x) => (x.status === 'InProgress' ? { ...x, status: status === 'Completed' ? 'Completed' : status === 'Cancelled' ? 'Cancelled' : 'Failed', endTime: t } : x));
    if (tasksFix) tasks = tasksFix(tasks);
    await this.updateJob(id, { status, end_time: t, tasks_json: JSON.stringify(tasks), error_json: err === undefined ? null : JSON.stringify([jobErrorOf(err)]), progress: status === 'Completed' ? 100 : j.progress });
  }

  async listJobs(v: VaultRow): Promise<JobRow[]> {
    return this.db.selectFrom('recovery_jobs').selectAll().where('vault_norm', '=', v.id_norm).orderBy('start_time', 'desc').orderBy('id').execute();
  }

  async runningJobFor(itemNorm: string, ops: string[] = ['Backup', 'Restore']): Promise<JobRow | undefined> {
    return this.db.selectFrom('recovery_jobs').selectAll().where('item_norm', '=', itemNorm).where('status', 'in', ['InProgress', 'Cancelling']).where('operation', 'in', ops).executeTakeFirst();
  }

  async cancelJob(v: VaultRow, id: string): Promise<JobRow> {
    const j = await this.getJob(id);
    if (!j || j.vault_norm !== v.id_norm) throw recoveryErrors.jobNotFound(id);
    if (j.operation !== 'Backup') throw new RecoveryError(400, 'BMSUserErrorJobNotCancellable', `Cancellation isn't supported for this job type (${j.operation}).`, { recommendation: 'Only Backup jobs can be cancelled.' });
    if (j.status !== 'InProgress') throw recoveryErrors.notCancellable(id, j.status);
    await this.updateJob(j.id, { status: 'Cancelling', cancel_requested: 1 });
    const ac = this.running.get(j.id);
    if (ac) ac.abort(new Error('cancelled'));
    else {
      // Not running in this process (queued, or on another worker): the worker sees cancel_requested when it starts.
      const q = await this.getJob(j.id);
      if (q && q.status === 'Cancelling' && !JSON.parse(q.tasks_json).some((t: JobTask) => t.status !== 'NotStarted')) await this.finishJob(j.id, 'Cancelled');
    }
    return (await this.getJob(j.id))!;
  }

  // ---- recovery points -------------------------------------------------------------------------------------------
  async listPoints(itemNorm: string): Promise<PointRow[]> {
    return this.db.selectFrom('recovery_points').selectAll().where('item_norm', '=', itemNorm).orderBy('time', 'desc').execute();
  }

  async getPoint(itemNorm: string, id: string): Promise<PointRow | undefined> {
    return this.db.selectFrom('recovery_points').selectAll().where('item_norm', '=', itemNorm).where('id', '=', id).executeTakeFirst();
  }

  /**
   * A recovery point's key and secret backup (keyAndSecret) for `caller`: only when it may read the source VM.
   * The KEK backup blob restores into any key vault of this installation and unwraps the BEK there, so it goes only
   * to someone who may already read the VM (access.ts); others see the recovery point without it.
   */
  async keysFor(caller: Caller, item: ItemRow, rp: PointRow): Promise<Record<string, unknown> | undefined> {
    if (!rp.keys_sealed || !(await mayAccess(this.d.identity, caller, keyNeeds(item.vm_id)))) return undefined;
    return this.openKeys(rp);
  }

  openKeys(rp: PointRow): Record<string, unknown> | undefined {
    if (!rp.keys_sealed) return undefined;
    // Key Vault URLs recorded before (without the port) are read in their reachable form (keyvault urls.ts).
    return this.d.keyvault.urls.canonicalDeep(JSON.parse(this.d.sealer.openText(rp.keys_sealed, `recovery-rp-keys:${rp.id}`)) as Record<string, unknown>);
  }

  // ---- schedules -------------------------------------------------------------------------------------------------
  /**
   * Every protected item's policy schedule. With `catchUpMs`, the latest slot missed while the server was down runs
   * once at start — not one from before the item was protected or last backed up (`notBefore`).
   */
  policySource(catchUpMs = 0): ScheduleSource {
    return {
      name: 'recovery-policy',
      queue: QUEUE_SCHEDULED,
      ...(catchUpMs > 0 ? { catchUpMs } : {}),
      entries: async () => {
        const rows = await this.db
          .selectFrom('recovery_items')
          .innerJoin('recovery_policies', (j) => j.onRef('recovery_policies.vault_norm', '=', 'recovery_items.vault_norm').onRef('recovery_policies.name_norm', '=', 'recovery_items.policy_name'))
          .select(['recovery_items.id_norm as item', 'recovery_policies.props_json as props', 'recovery_items.created_at as created', 'recovery_items.last_backup_time as lastBackup'])
          .where('recovery_items.deferred_delete_at', 'is', null)
          .execute();
        return rows.map((r) => ({ key: r.item, cron: scheduleCron(JSON.parse(r.props) as IaasVmPolicy), notBefore: Math.max(Number(r.created), Number(r.lastBackup ?? 0)) }));
      },
    };
  }

  /** Errors from a dead worker, or reported to a caller, as ARM bodies. */
  static errorBody(e: unknown): { code: string; message: string } {
    if (e instanceof HttpError) return { code: canonicalCode(e.code), message: e.message };
    return { code: 'BackUpOperationFailed', message: 'Backup failed with an internal error; retry in a few minutes.' };
  }
}

export function jobErrorOf(e: unknown): JobError {
  if (e instanceof ArmError) {
    const code = canonicalCode(e.code);
    return { errorCode: e instanceof RecoveryError ? e.numericCode : 500000, errorString: e.message, errorTitle: code, recommendations: e.recommendation ? [e.recommendation] : [] };
  }
  if (e && typeof e === 'object' && 'errorTitle' in e) return e as JobError;
  return { errorCode: 500001, errorString: `Backup failed with an internal error: ${(e as Error)?.message ?? String(e)}`, errorTitle: 'BackUpOperationFailed', recommendations: ['Retry the operation in a few minutes; if it keeps failing, check the server log.'] };
}

function classicEncrypted(props: Record<string, unknown>): boolean {
  const s = JSON.stringify(props).toLowerCase();
  return s.includes('encryption') && !s.includes('"encryptionenabled":false');
}

/** Deterministic GUID for a trigger key (scheduled slot): the same slot always names the same job. */
export function uuidFrom(key: string): string {
  const h = createHash('sha256').update(key).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

export const softDeleteMs = SOFT_DELETE_DAYS * 86_400_000;
