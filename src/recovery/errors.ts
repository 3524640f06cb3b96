/**
 * The Recovery Services error catalogue (ERRORS.md): every failure has a stable code, a message naming the
 * resource, a recommendation, and a stable numeric `errorCode` for job `errorDetails`.
 */
import { ArmError } from '../platform/http/errors.js';

/** Stable numeric codes for job errorDetails[].errorCode (int32, as Azure's AzureIaaSVMErrorInfo). */
export const NUMERIC_CODES: Record<string, number> = {
  UserErrorBekOnlyEncryptionNotSupported: 400301,
  UserErrorKeyVaultNotFound: 400302,
  UserErrorKeyAndSecretNotFound: 400303,
  UserErrorBackupServiceNotAuthorized: 400304,
  UserErrorKeyVaultPermissionsNotConfigured: 400305,
  UserErrorClassicVmNotSupported: 400306,
  UserErrorGuestAgentStatusUnavailable: 400307,
  UserErrorBackupOperationInProgress: 400308,
  UserErrorEncryptedVmNotSupportedWithDiskEx: 400309,
  BCMV2VMNotFound: 400094,
  UserErrorVaultHasProtectedItems: 400310,
  UserErrorRecoveryPointNotFound: 400311,
  UserErrorRecoveryPointExpired: 400312,
  UserErrorJobCancelled: 400313,
  UserErrorVmNotInDesirableState: 400314,
  UserErrorStorageAccountNotFound: 400315,
  UserErrorStorageAccountFull: 400316,
  UserErrorOriginalLocationRestoreNotSupportedForEncryptedVm: 400317,
  UserErrorTargetVirtualMachineExists: 400318,
  UserErrorKeyAlreadyExistsInTargetVault: 400319,
  UserErrorChunkCorrupted: 400320,
  UserErrorChunkMissing: 400321,
  UserErrorRecoveryPointNotEncrypted: 400322,
  UserErrorRestoreInterrupted: 400323,
  UserErrorRecoveryPointTampered: 400324,
  UserErrorVerifyFoundDamagedData: 400325,
  UserErrorVerifyFoundUnauthenticatedManifests: 400326,
  UserErrorVmAlreadyProtectedInAnotherVault: 400327,
  BackUpOperationFailed: 500001,
  RestoreFailed: 500003,
  InternalServerError: 500002,
};

export class RecoveryError extends ArmError {
  override name = 'RecoveryError';
  get numericCode(): number {
    return NUMERIC_CODES[this.code] ?? 500000;
  }
}

/** Accepts the lower-case-v alias some docs use; always emits the capital-V spelling. */
export function canonicalCode(code: string): string {
  return code === 'UserErrorKeyvaultPermissionsNotConfigured' ? 'UserErrorKeyVaultPermissionsNotConfigured' : code;
}

const vmName = (id: string) => id.split('/').pop() ?? id;

export const recoveryErrors = {
  vmNotFound: (vmId: string) =>
    new RecoveryError(404, 'BCMV2VMNotFound', `The virtual machine '${vmId}' does not exist (or no longer exists).`, {
      target: 'sourceResourceId',
      recommendation: 'Check the VM id (`rsvault vm list`), recreate the VM, or stop protection of the item.',
    }),
  classicVm: (vmId: string, encrypted: boolean) =>
    new RecoveryError(400, 'UserErrorClassicVmNotSupported', `The virtual machine '${vmName(vmId)}' uses the classic deployment model${encrypted ? ' and is encrypted' : ''}: backup of ${encrypted ? 'encrypted ' : ''}VMs is supported only for Resource Manager virtual machines.`, {
      target: 'sourceResourceId',
      recommendation: 'Migrate the VM to the Resource Manager model (Microsoft.Compute/virtualMachines), then enable backup for the migrated VM.',
    }),
  agent: (vmId: string, status: string) =>
    new RecoveryError(400, 'UserErrorGuestAgentStatusUnavailable', `The VM agent of virtual machine '${vmName(vmId)}' is unable to communicate with Azure Backup (agent status: ${status}).`, {
      recommendation: status === 'NotInstalled'
        ? 'Install the VM agent on the VM (rsvault vm agent install), make sure the VM is running, then retry.'
        : 'Start the VM and make sure its VM agent is Ready (rsvault vm start), then retry.',
    }),
  bekOnly: (vmId: string) =>
    new RecoveryError(400, 'UserErrorBekOnlyEncryptionNotSupported', `Validation failed as virtual machine '${vmName(vmId)}' is encrypted with BEK alone. Backups can be enabled only for virtual machines encrypted with both BEK and KEK.`, {
      recommendation:
        'Decrypt the VM, encrypt it again with a key-encryption key (az vm encryption enable --key-encryption-key <kek> ...), then enable backup; or allow BEK-only backups on this vault: rsvault backup vault backup-properties set --bek-only-backup Enabled (vaultconfig properties.bekOnlyBackup: Enabled).',
    }),
  kvPermissions: (vaultName: string, missing: string, bmsObjectId: string) =>
    new RecoveryError(400, 'UserErrorKeyVaultPermissionsNotConfigured', `Azure Backup Service does not have sufficient permissions to Key Vault '${vaultName}' for Backup of Encrypted Virtual Machines; missing: ${missing}.`, {
      recommendation: `Grant the "Azure Backup" access-policy template to the Backup Management Service, then retry (backups resume by themselves): az keyvault set-policy -n ${vaultName} --object-id ${bmsObjectId} --key-permissions get list backup --secret-permissions get list backup`,
    }),
  kvNotFound: (vaultRef: string) =>
    new RecoveryError(400, 'UserErrorKeyVaultNotFound', `The key vault '${vaultRef}' that holds the encryption key or secret of this VM does not exist.`, {
      recommendation: 'Recreate the key vault (or recover it from soft delete: az keyvault recover), restore the key and secret into it, then retry.',
    }),
  keyOrSecretMissing: (url: string) =>
    new RecoveryError(400, 'UserErrorKeyAndSecretNotFound', `The key or secret '${url}' recorded in the VM's encryption settings does not exist.`, {
      recommendation: 'Restore the key/secret into the key vault (az keyvault key restore / secret restore) or re-encrypt the VM, then retry.',
    }),
  diskExclusion: (vmId: string) =>
    new RecoveryError(400, 'UserErrorEncryptedVmNotSupportedWithDiskEx', `Disk exclusion is not supported for encrypted virtual machines ('${vmName(vmId)}').`, {
      target: 'extendedProperties.diskExclusionProperties',
      recommendation: 'Remove diskExclusionProperties and back up all disks of the VM.',
    }),
  inProgress: (item: string) =>
    new RecoveryError(409, 'UserErrorBackupOperationInProgress', `Unable to initiate backup as another backup operation is currently in progress for '${item}'.`, {
      recommendation: 'Wait for the running job to finish (rsvault backup job list --status InProgress) or cancel it (rsvault backup job stop --name <job>), then retry.',
    }),
  protectedElsewhere: (vmId: string, otherVaultId: string) =>
    new RecoveryError(409, 'UserErrorVmAlreadyProtectedInAnotherVault', `The virtual machine '${vmName(vmId)}' is already protected by another Recovery Services vault ('${otherVaultId}'); a VM can be protected by one vault at a time.`, {
      recommendation: `Stop protection of the VM in that vault and delete its backup data (rsvault backup protection disable --vault-name ${vmName(otherVaultId)} --delete-backup-data true; a soft-deleted item holds the VM until it is purged), then retry.`,
    }),
  vaultHasItems: (vault: string, what: string) =>
    new RecoveryError(409, 'UserErrorVaultHasProtectedItems', `${what}: the Recovery Services vault '${vault}' has protected items.`, {
      recommendation: `Stop protection and delete the backup data of every item first (rsvault backup item list --vault-name ${vault}; rsvault backup protection disable --delete-backup-data true).`,
    }),
  itemNotFound: (name: string) =>
    new RecoveryError(404, 'BMSUserErrorItemNotFound', `The protected item '${name}' was not found in the vault.`, {
      recommendation: 'List the protected items with: rsvault backup item list --vault-name <vault> -g <group>',
    }),
  notProtected: (name: string) =>
    new RecoveryError(400, 'UserErrorProtectionStopped', `Backup of '${name}' is not possible: protection of the item is stopped.`, {
      recommendation: 'Resume protection with a policy (rsvault backup protection resume --policy-name <policy>), then retry.',
    }),
  rpNotFound: (id: string) =>
    new RecoveryError(404, 'UserErrorRecoveryPointNotFound', `The recovery point '${id}' was not found (it may have been pruned by retention).`, {
      recommendation: 'List the recovery points with: rsvault backup recoverypoint list',
    }),
  policyNotFound: (name: string) =>
    new RecoveryError(404, 'BMSUserErrorPolicyNotFound', `The backup policy '${name}' was not found in the vault.`, {
      target: 'policyId',
      recommendation: 'List the policies with: rsvault backup policy list',
    }),
  jobNotFound: (id: string) => new RecoveryError(404, 'BMSUserErrorJobNotFound', `The job '${id}' was not found in the vault.`, { recommendation: 'List the jobs with: rsvault backup job list' }),
  notCancellable: (id: string, status: string) =>
    new RecoveryError(400, 'BMSUserErrorJobNotCancellable', `Backup can't cancel the job '${id}' because it isn't in progress (status: ${status}).`, {
      recommendation: 'Only InProgress Backup jobs can be cancelled.',
    }),
};

/** Restore failures (ERRORS.md #2, #3, #4 and docs/ERRORS-rsvault.md). `fix` is the exact command that repairs the cause. */
export const restoreErrors = {
  kvNotFound: (vaultId: string, fix: string) =>
    new RecoveryError(400, 'UserErrorKeyVaultNotFound', `The encrypted VM cannot be restored because key vault '${vaultId}' associated with it does not exist.`, {
      target: 'properties.encryptionDetails',
      recommendation: `Create the key vault (rsvault keyvault create -n ${vaultId.split('/').pop()} -g ${/resourceGroups\/([^/]+)/i.exec(vaultId)?.[1] ?? '<group>'} -l <location> --enabled-for-disk-encryption true), restore the key and secret from the recovery point into it: ${fix} — then retry the restore with the key and secret URLs it prints (--kek-url, --secret-url).`,
    }),
  keyAndSecretNotFound: (missing: string[], fix: string) =>
    new RecoveryError(400, 'UserErrorKeyAndSecretNotFound', `The encrypted VM cannot be restored because the key and/or secret associated with it do not exist: ${missing.map((m) => `'${m}'`).join(', ')}.`, {
      target: 'properties.encryptionDetails',
      recommendation: `Restore the key and secret from the recovery point: ${fix} — then retry the restore with the key and secret URLs it prints (--kek-url, --secret-url).`,
    }),
  notAuthorized: (scope: string, missing: string[], restoreDisksCmd: string, grantCmds: string[]) =>
    new RecoveryError(400, 'UserErrorBackupServiceNotAuthorized', `Backup Service does not have authorization to access resources in resource group '${scope}' (missing: ${missing.join('; ')}).`, {
      target: 'properties.targetResourceGroupId',
      recommendation: `Restore the disks instead, then create the VM from them: ${restoreDisksCmd}, then deploy the template the job names (rsvault deployment group create -g <group> --template-file <template>) or rsvault vm create --attach-os-disk <restored disk> --os-type Linux. Or grant the Backup Management Service access: ${grantCmds.join(' ; ')}`,
    }),
  originalLocationEncrypted: (vm: string) =>
    new RecoveryError(400, 'UserErrorOriginalLocationRestoreNotSupportedForEncryptedVm', `Replacing the disks of the existing VM ('OriginalLocation') is not supported for encrypted VMs ('${vm}'), as in Azure Backup.`, {
      target: 'properties.recoveryType',
      recommendation: "Use recoveryType 'RestoreDisks' (then create a VM from the disks) or 'AlternateLocation' (a new VM): rsvault backup restore restore-disks | restore-vm.",
    }),
  storageNotFound: (id: string) =>
    new RecoveryError(404, 'UserErrorStorageAccountNotFound', `The staging storage account '${id}' does not exist.`, {
      target: 'properties.storageAccountId',
      recommendation: `Create it first: rsvault storage account create -n ${id.split('/').pop()} -g ${/resourceGroups\/([^/]+)/i.exec(id)?.[1] ?? '<group>'} -l <location>`,
    }),
  storageFull: (account: string, detail: string) =>
    new RecoveryError(400, 'UserErrorStorageAccountFull', `The storage account '${account}' ran out of space during the restore (${detail}); nothing was kept: no restored disk or file is left in it.`, {
      recommendation: `Free space or raise the account's quota (rsvault storage account create -n ${account} ... --quota-bytes <n>, or remove --quota-bytes), or restore to another account, then retry.`,
    }),
  targetVmExists: (id: string) =>
    new RecoveryError(409, 'UserErrorTargetVirtualMachineExists', `The target virtual machine '${id}' already exists; a restore creates a new VM.`, {
      target: 'properties.targetVirtualMachineId',
      recommendation: 'Choose another VM name (--target-vm-name), or delete the existing VM first.',
    }),
  notEncrypted: (rp: string) =>
    new RecoveryError(400, 'UserErrorRecoveryPointNotEncrypted', `The recovery point '${rp}' is of a VM that was not encrypted: it holds no key or secret to restore.`, {
      recommendation: 'Restore the disks directly (rsvault backup restore restore-disks).',
    }),
  keyConflict: (name: string, vault: string, version: string) =>
    new RecoveryError(409, 'UserErrorKeyAlreadyExistsInTargetVault', `The key '${name}' already exists in key vault '${vault}' without the backed-up version '${version}'; a key backup restores only under a free name.`, {
      recommendation: `Restore into another key vault (--target-key-vault), or delete and purge the key first: rsvault keyvault key delete --vault-name ${vault} -n ${name} && rsvault keyvault key purge --vault-name ${vault} -n ${name}`,
    }),
  chunk: (code: 'UserErrorChunkCorrupted' | 'UserErrorChunkMissing', message: string, rp: string, disk: string) =>
    new RecoveryError(400, code, `Restore of disk '${disk}' from recovery point '${rp}' stopped: ${message}. Nothing was written as restored.`, {
      recommendation: 'Restore from another recovery point (rsvault backup recoverypoint list) and check the vault store (verify).',
    }),
};
