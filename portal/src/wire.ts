/**
 * Wire types of the API the portal reads: the Azure shapes rsvault answers with (Microsoft.Resources, Microsoft.KeyVault,
 * Microsoft.Compute, Microsoft.RecoveryServices, Graph-lite). Only the fields the portal uses; all optional beyond ids,
 * since the server may add or omit members. Source: /work/shared/design/reference/{azure-backup-api,keyvault-ade}.md.
 */

export interface ArmResource<P = Record<string, unknown>> {
  id: string;
  name: string;
  type: string;
  location?: string;
  tags?: Record<string, string>;
  properties?: P;
}

export type ResourceGroup = ArmResource<{ provisioningState?: string }>;

// ---- Graph ------------------------------------------------------------------------------------------------------------
export interface GraphPrincipal {
  id: string;
  displayName: string;
  appId?: string;
  userPrincipalName?: string;
  mail?: string;
  servicePrincipalType?: string;
}

// ---- Key Vault --------------------------------------------------------------------------------------------------------
export interface Permissions {
  keys?: string[];
  secrets?: string[];
  certificates?: string[];
  storage?: string[];
}

export interface AccessPolicyEntry {
  tenantId: string;
  objectId: string;
  applicationId?: string | null;
  permissions: Permissions;
}

export interface KeyVaultProps {
  tenantId?: string;
  sku?: { family?: string; name?: string };
  accessPolicies?: AccessPolicyEntry[];
  vaultUri?: string;
  enabledForDeployment?: boolean;
  enabledForDiskEncryption?: boolean;
  enabledForTemplateDeployment?: boolean;
  enableSoftDelete?: boolean;
  softDeleteRetentionInDays?: number;
  enablePurgeProtection?: boolean;
  enableRbacAuthorization?: boolean;
  provisioningState?: string;
}
export type KeyVault = ArmResource<KeyVaultProps>;

export interface AccessPolicyTemplate {
  name: string;
  description?: string;
  permissions: Permissions;
}

/** ARM keys of a vault (`…/vaults/{v}/keys`). */
export type VaultKey = ArmResource<{ keyUri?: string; keyUriWithVersion?: string; kty?: string; attributes?: { enabled?: boolean } }>;

// ---- Compute ----------------------------------------------------------------------------------------------------------
export interface KeyVaultSecretReference {
  secretUrl?: string;
  sourceVault?: { id?: string };
}
export interface KeyVaultKeyReference {
  keyUrl?: string;
  sourceVault?: { id?: string };
}
export interface DiskEncryptionSettings {
  enabled?: boolean;
  diskEncryptionKey?: KeyVaultSecretReference;
  keyEncryptionKey?: KeyVaultKeyReference;
}
export interface InstanceViewStatus {
  code?: string;
  level?: string;
  displayStatus?: string;
  message?: string;
}
export interface VmDiskRef {
  name?: string;
  lun?: number;
  diskSizeGB?: number;
  osType?: string;
  managedDisk?: { id?: string };
  encryptionSettings?: DiskEncryptionSettings;
}
export interface VmInstanceView {
  vmAgent?: { vmAgentVersion?: string; statuses?: InstanceViewStatus[] };
  disks?: { name?: string; encryptionSettings?: DiskEncryptionSettings[]; statuses?: InstanceViewStatus[] }[];
  statuses?: InstanceViewStatus[];
  extensions?: { name?: string; type?: string; statuses?: InstanceViewStatus[]; substatuses?: InstanceViewStatus[] }[];
}
export interface VmProps {
  vmId?: string;
  hardwareProfile?: { vmSize?: string };
  storageProfile?: { osDisk?: VmDiskRef; dataDisks?: VmDiskRef[] };
  osProfile?: { computerName?: string };
  provisioningState?: string;
  instanceView?: VmInstanceView;
  securityProfile?: unknown;
}
export type VirtualMachine = ArmResource<VmProps>;

export type ManagedDisk = ArmResource<{
  diskSizeGB?: number;
  osType?: string;
  diskState?: string;
  encryptionSettingsCollection?: { enabled?: boolean; encryptionSettings?: DiskEncryptionSettings[]; encryptionSettingsVersion?: string };
}>;

export type StorageAccount = ArmResource<{ provisioningState?: string; primaryEndpoints?: { blob?: string } }> & { kind?: string; sku?: { name?: string } };

// ---- Recovery Services ------------------------------------------------------------------------------------------------
export type RecoveryVault = ArmResource<{ provisioningState?: string }> & { sku?: { name?: string } };

export interface SchedulePolicy {
  schedulePolicyType?: string;
  scheduleRunFrequency?: string;
  scheduleRunDays?: string[] | null;
  scheduleRunTimes?: string[];
  scheduleWeeklyFrequency?: number;
}
export interface RetentionDuration {
  count?: number;
  durationType?: string;
}
export interface RetentionPolicy {
  retentionPolicyType?: string;
  dailySchedule?: { retentionTimes?: string[]; retentionDuration?: RetentionDuration } | null;
  weeklySchedule?: { daysOfTheWeek?: string[]; retentionTimes?: string[]; retentionDuration?: RetentionDuration } | null;
  monthlySchedule?: unknown;
  yearlySchedule?: unknown;
}
export type BackupPolicy = ArmResource<{
  backupManagementType?: string;
  schedulePolicy?: SchedulePolicy;
  retentionPolicy?: RetentionPolicy;
  instantRpRetentionRangeInDays?: number;
  timeZone?: string;
  protectedItemsCount?: number;
}>;

export type ProtectableItem = ArmResource<{
  protectableItemType?: string;
  virtualMachineId?: string;
  friendlyName?: string;
  protectionState?: string;
  backupManagementType?: string;
  workloadType?: string;
}>;

export type ProtectedItem = ArmResource<{
  protectedItemType?: string;
  friendlyName?: string;
  virtualMachineId?: string;
  sourceResourceId?: string;
  containerName?: string;
  policyId?: string;
  policyName?: string;
  protectionState?: string;
  protectionStatus?: string;
  healthStatus?: string;
  lastBackupStatus?: string;
  lastBackupTime?: string;
  lastRecoveryPoint?: string;
  extendedInfo?: { recoveryPointCount?: number; oldestRecoveryPoint?: string };
}>;

export interface JobErrorInfo {
  errorCode?: number;
  errorTitle?: string;
  errorString?: string;
  recommendations?: string[];
}
export interface JobTask {
  taskId?: string;
  status?: string;
  startTime?: string;
  endTime?: string;
  duration?: string;
  progressPercentage?: number;
}
export type BackupJob = ArmResource<{
  jobType?: string;
  entityFriendlyName?: string;
  backupManagementType?: string;
  operation?: string;
  status?: string;
  startTime?: string;
  endTime?: string;
  duration?: string;
  activityId?: string;
  actionsInfo?: (string | number)[];
  errorDetails?: JobErrorInfo[];
  containerName?: string;
  extendedInfo?: {
    tasksList?: JobTask[];
    propertyBag?: Record<string, string>;
    progressPercentage?: number;
    estimatedRemainingDuration?: string;
    dynamicErrorMessage?: string;
  };
}>;

export type RecoveryPoint = ArmResource<{
  objectType?: string;
  recoveryPointType?: string;
  recoveryPointTime?: string;
  isSourceVMEncrypted?: boolean;
  keyAndSecret?: {
    kekDetails?: { keyUrl?: string; keyVaultId?: string; keyBackupData?: string };
    bekDetails?: { secretUrl?: string; secretVaultId?: string; secretData?: string };
    encryptionMechanism?: string;
  };
  recoveryPointTierDetails?: { type?: string; status?: string }[];
  virtualMachineSize?: string;
  osType?: string;
  recoveryPointProperties?: { expiryTime?: string };
}>;
