/** ARM shapes of Recovery Services resources (what the SDKs and az deserialize). */
import { containerName, isoDuration, itemName, LAST_BACKUP_SENTINEL, shortContainerName, SOFT_DELETE_DAYS, VAULT_TYPE, type VmRef } from './model.js';
import { refOfItem, softDeleteMs, type ItemRow, type JobRow, type JobTask, type PointRow, type PolicyRow, type VaultRow } from './service.js';
import type { DiskRecord } from './backup.js';

const iso = (t: number | null | undefined) => (t === null || t === undefined ? undefined : new Date(Number(t)).toISOString());

export function vaultView(v: VaultRow, protectedItems: number) {
  const props = JSON.parse(v.props_json) as Record<string, unknown>;
  return {
    id: v.id,
    name: v.name,
    type: VAULT_TYPE,
    location: v.location,
    tags: JSON.parse(v.tags_json) as Record<string, string>,
    etag: v.etag,
    sku: JSON.parse(v.sku_json) as Record<string, unknown>,
    ...(v.identity_json ? { identity: JSON.parse(v.identity_json) as unknown } : {}),
    properties: {
      publicNetworkAccess: 'Enabled',
      ...props,
      provisioningState: 'Succeeded',
      privateEndpointStateForBackup: 'None',
      privateEndpointStateForSiteRecovery: 'None',
      redundancySettings: { standardTierStorageRedundancy: v.storage_type, crossRegionRestore: v.cross_region_restore ? 'Enabled' : 'Disabled' },
      securitySettings: { softDeleteSettings: { softDeleteState: v.soft_delete, softDeleteRetentionPeriodInDays: SOFT_DELETE_DAYS } },
      backupStorageVersion: 'V2',
      protectedItemsCount: protectedItems,
    },
    systemData: { createdAt: iso(v.created_at), lastModifiedAt: iso(v.updated_at) },
  };
}

export function storageConfigView(v: VaultRow, locked: boolean) {
  return {
    id: `${v.id}/backupstorageconfig/vaultstorageconfig`,
    name: 'vaultstorageconfig',
    type: 'Microsoft.RecoveryServices/vaults/backupstorageconfig',
    properties: { storageModelType: v.storage_type, storageType: v.storage_type, storageTypeState: locked ? 'Locked' : 'Unlocked', crossRegionRestoreFlag: v.cross_region_restore === 1, dedupState: 'Disabled', xcoolState: 'Disabled' },
  };
}

export function vaultConfigView(v: VaultRow) {
  return {
    id: `${v.id}/backupconfig/vaultconfig`,
    name: 'vaultconfig',
    type: 'Microsoft.RecoveryServices/vaults/backupconfig',
    properties: {
      softDeleteFeatureState: v.soft_delete,
      enhancedSecurityState: v.enhanced_security,
      isSoftDeleteFeatureStateEditable: v.soft_delete !== 'AlwaysON',
      softDeleteRetentionPeriodInDays: SOFT_DELETE_DAYS,
      resourceGuardOperationRequests: [],
      /** rsvault: allow backups of VMs encrypted with a BEK and no KEK (off by default, as documented). */
      bekOnlyBackup: v.bek_only,
    },
  };
}

export function policyView(v: VaultRow, p: PolicyRow, count: number) {
  return {
    id: `${v.id}/backupPolicies/${p.name}`,
    name: p.name,
    type: 'Microsoft.RecoveryServices/vaults/backupPolicies',
    properties: { ...(JSON.parse(p.props_json) as Record<string, unknown>), protectedItemsCount: count },
  };
}

export function protectableView(v: VaultRow, x: { ref: VmRef; vmId: string; friendlyName: string; encrypted: boolean; protectionState: string }) {
  return {
    id: `${v.id}/backupFabrics/Azure/protectionContainers/${containerName(x.ref)}/protectableItems/${itemName(x.ref)}`,
    name: itemName(x.ref),
    type: 'Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectableItems',
    properties: {
      protectableItemType: x.ref.classic ? 'Microsoft.ClassicCompute/virtualMachines' : 'Microsoft.Compute/virtualMachines',
      virtualMachineId: x.vmId,
      virtualMachineVersion: x.ref.classic ? 'ClassicCompute' : 'Compute',
      resourceGroup: x.ref.resourceGroup,
      backupManagementType: 'AzureIaasVM',
      workloadType: 'VM',
      friendlyName: x.friendlyName,
      protectionState: x.protectionState,
      /** rsvault: the VM's disks are encrypted (Azure Disk Encryption). */
      isEncrypted: x.encrypted,
    },
  };
}

export function containerView(v: VaultRow, i: ItemRow) {
  const ref = refOfItem(i);
  return {
    id: `${v.id}/backupFabrics/Azure/protectionContainers/${containerName(ref)}`,
    name: containerName(ref),
    type: 'Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers',
    properties: {
      friendlyName: i.vm_name,
      backupManagementType: 'AzureIaasVM',
      registrationStatus: 'Registered',
      healthStatus: 'Healthy',
      containerType: ref.classic ? 'Microsoft.ClassicCompute/virtualMachines' : 'Microsoft.Compute/virtualMachines',
      virtualMachineId: i.vm_id,
      virtualMachineVersion: ref.classic ? 'ClassicCompute' : 'Compute',
      resourceGroup: i.vm_rg,
    },
  };
}

export function itemView(v: VaultRow, i: ItemRow, x: { policyDisplayName?: string | undefined; points: PointRow[]; now: number }) {
  const ref = refOfItem(i);
  const health = i.health_json ? (JSON.parse(i.health_json) as { healthStatus: string; healthDetails: unknown[] }) : undefined;
  const oldest = x.points.length ? x.points[x.points.length - 1]!.time : undefined;
  const deleted = i.deferred_delete_at !== null;
  const ext = JSON.parse(i.extended_json) as Record<string, unknown>;
  return {
    id: `${v.id}/backupFabrics/Azure/protectionContainers/${containerName(ref)}/protectedItems/${itemName(ref)}`,
    name: itemName(ref),
    type: 'Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems',
    properties: {
      protectedItemType: 'Microsoft.Compute/virtualMachines',
      friendlyName: i.vm_name,
      virtualMachineId: i.vm_id,
      sourceResourceId: i.vm_id,
      backupManagementType: 'AzureIaasVM',
      workloadType: 'VM',
      containerName: shortContainerName(ref),
      policyId: i.policy_name ? `${v.id}/backupPolicies/${x.policyDisplayName ?? i.policy_name}` : '',
      policyName: i.policy_name ? (x.policyDisplayName ?? i.policy_name) : '',
      protectionStatus: health ? 'Unhealthy' : 'Healthy',
      protectionState: i.protection_state,
      healthStatus: health?.healthStatus ?? 'Passed',
      healthDetails: health?.healthDetails ?? [],
      lastBackupStatus: i.last_backup_status,
      lastBackupTime: iso(i.last_backup_time) ?? LAST_BACKUP_SENTINEL,
      ...(i.last_rp_id ? { lastRecoveryPoint: iso(x.points.find((p) => p.id === i.last_rp_id)?.time) } : {}),
      protectedItemDataId: String(parseInt(i.id_norm.replace(/[^0-9a-f]/g, '').slice(0, 12) || '0', 16)),
      extendedInfo: { oldestRecoveryPoint: iso(oldest), oldestRecoveryPointInVault: iso(oldest), recoveryPointCount: x.points.length, policyInconsistent: false },
      extendedProperties: ext,
      isScheduledForDeferredDelete: deleted,
      ...(deleted ? { deferredDeleteTimeInUTC: iso(i.deferred_delete_at! + softDeleteMs), deferredDeleteTimeRemaining: isoDuration(i.deferred_delete_at! + softDeleteMs - x.now) } : {}),
      softDeleteRetentionPeriodInDays: SOFT_DELETE_DAYS,
      isRehydrate: false,
      isArchiveEnabled: false,
      createMode: 'Default',
      resourceGuardOperationRequests: [],
    },
  };
}

export function jobView(v: VaultRow, j: JobRow, detail = true) {
  const tasks = JSON.parse(j.tasks_json) as JobTask[];
  const errs = j.error_json ? (JSON.parse(j.error_json) as unknown[]) : [];
  const end = j.end_time ?? Date.now();
  return {
    id: `${v.id}/backupJobs/${j.id}`,
    name: j.id,
    type: 'Microsoft.RecoveryServices/vaults/backupJobs',
    properties: {
      jobType: 'AzureIaaSVMJob',
      entityFriendlyName: j.friendly_name,
      backupManagementType: 'AzureIaasVM',
      operation: j.operation,
      status: j.status,
      startTime: iso(j.start_time),
      ...(j.end_time ? { endTime: iso(j.end_time) } : {}),
      duration: isoDuration(end - Number(j.start_time)),
      activityId: j.id,
      virtualMachineVersion: 'Compute',
      containerName: j.container_name,
      isUserTriggered: j.user_triggered === 1,
      actionsInfo: j.status === 'InProgress' && j.operation === 'Backup' ? ['Cancellable'] : [],
      errorDetails: errs,
      ...(detail
        ? {
            extendedInfo: {
              tasksList: tasks.map((t) => ({
                taskId: t.taskId,
                status: t.status,
                ...(t.startTime ? { startTime: iso(t.startTime) } : {}),
                ...(t.endTime ? { endTime: iso(t.endTime) } : {}),
                duration: isoDuration(t.startTime ? (t.endTime ?? Date.now()) - t.startTime : 0),
                ...(t.progressPercentage !== undefined ? { progressPercentage: t.progressPercentage } : {}),
                instanceId: j.id,
              })),
              propertyBag: JSON.parse(j.bag_json) as Record<string, string>,
              progressPercentage: j.progress,
              ...(errs.length ? { dynamicErrorMessage: (errs[0] as { errorString?: string }).errorString } : {}),
            },
          }
        : {}),
    },
  };
}

export function pointView(itemId: string, rp: PointRow, keyAndSecret?: Record<string, unknown>) {
  const disks = JSON.parse(rp.disks_json) as DiskRecord[];
  const vm = JSON.parse(rp.vm_json) as { hardwareProfile?: { vmSize?: string }; osType?: string };
  return {
    id: `${itemId}/recoveryPoints/${rp.id}`,
    name: rp.id,
    type: 'Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/recoveryPoints',
    properties: {
      objectType: 'IaasVMRecoveryPoint',
      recoveryPointType: rp.rp_type,
      recoveryPointTime: iso(rp.time),
      recoveryPointAdditionalInfo: '',
      sourceVMStorageType: 'NormalStorage',
      isSourceVMEncrypted: rp.encrypted === 1,
      ...(keyAndSecret
        ? {
            keyAndSecret: {
              kekDetails: keyAndSecret.kekDetails ? pick(keyAndSecret.kekDetails, ['keyUrl', 'keyVaultId', 'keyBackupData']) : undefined,
              bekDetails: pick(keyAndSecret.bekDetails, ['secretUrl', 'secretVaultId', 'secretData']),
              encryptionMechanism: keyAndSecret.encryptionMechanism,
            },
          }
        : {}),
      isInstantIlrSessionActive: false,
      recoveryPointTierDetails: [{ type: 'HardenedRP', status: 'Valid' }],
      isManagedVirtualMachine: true,
      virtualMachineSize: vm.hardwareProfile?.vmSize,
      originalStorageAccountOption: false,
      osType: vm.osType,
      recoveryPointDiskConfiguration: {
        numberOfDisksIncludedInBackup: disks.length,
        numberOfDisksAttachedToVm: disks.length,
        includedDiskList: disks.map((d) => ({ lun: d.os ? -1 : d.lun, name: d.name })),
        excludedDiskList: [],
      },
      recoveryPointProperties: { expiryTime: iso(rp.expiry), ruleName: rp.rule, isSoftDeleted: false },
    },
  };
}

function pick(o: unknown, keys: string[]): Record<string, unknown> | undefined {
  if (!o || typeof o !== 'object') return undefined;
  const out: Record<string, unknown> = {};
  for (const k of keys) out[k] = (o as Record<string, unknown>)[k];
  return out;
}
