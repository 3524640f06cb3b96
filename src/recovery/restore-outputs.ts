/**
 * What a restore writes beside the disks (pure builders): the VM config JSON ("Config Blob Name"), the encryption-info
 * JSON ("Encryption Info Blob Name": OsDiskKeyAndSecretDetails, KeyVaultSecretBackupData for BEK-only) and the ARM
 * template ("Template Blob Uri") that recreates the VM from the restored disks.
 */
export interface EncryptionTarget {
  kekUrl?: string | undefined;
  kekVaultId?: string | undefined;
  secretUrl: string;
  secretVaultId: string;
}

/** The key material a recovery point keeps (sealed at rest). */
export interface RpKeys {
  encryptionMechanism?: string;
  kekDetails?: { keyUrl: string; keyVaultId: string; keyBackupData: string } | undefined;
  bekDetails?: { secretUrl: string; secretVaultId: string; secretData: string; secretBackupData?: string; contentType?: string; tags?: Record<string, string> } | undefined;
}

export interface RestoredDisk {
  name: string;
  os: boolean;
  lun?: number | undefined;
  sizeBytes: number;
  format: 'raw' | 'luks1';
  /** Storage target: the blob URI. */
  blobUri?: string | undefined;
  /** Managed-disk target: the disk id. */
  diskId?: string | undefined;
}

export interface VmSource {
  name: string;
  location: string;
  osType: string;
  vmSize: string;
  computerName?: string | undefined;
}

/** Key Vault backup blobs travel base64url on the wire; the encryption-info JSON carries standard base64 (as Azure's). */
export const toStdBase64 = (b64url: string) => Buffer.from(b64url, 'base64url').toString('base64');

export function encryptionSettingsCollection(e: EncryptionTarget) {
  return {
    enabled: true,
    encryptionSettings: [
      {
        diskEncryptionKey: { sourceVault: { id: e.secretVaultId }, secretUrl: e.secretUrl },
        ...(e.kekUrl && e.kekVaultId ? { keyEncryptionKey: { sourceVault: { id: e.kekVaultId }, keyUrl: e.kekUrl } } : {}),
      },
    ],
    encryptionSettingsVersion: '1.1',
  };
}

export function vmEncryptionSettings(e: EncryptionTarget) {
  return {
    enabled: true,
    diskEncryptionKey: { sourceVault: { id: e.secretVaultId }, secretUrl: e.secretUrl },
    ...(e.kekUrl && e.kekVaultId ? { keyEncryptionKey: { sourceVault: { id: e.kekVaultId }, keyUrl: e.kekUrl } } : {}),
  };
}

/** VMConfig.json with Azure's dotted top-level keys (UTF-8; parse keys case-insensitively). */
export function vmConfigJson(vm: VmSource, disks: RestoredDisk[], enc: EncryptionTarget | undefined, source: unknown) {
  const os = disks.find((d) => d.os);
  const ref = (d: RestoredDisk) => (d.blobUri ? { vhd: { uri: d.blobUri } } : { managedDisk: { id: d.diskId } });
  return {
    name: vm.name,
    location: vm.location,
    'properties.hardwareProfile': { vmSize: vm.vmSize },
    'properties.storageProfile': {
      osDisk: os ? { name: os.name, osType: vm.osType, ...ref(os), diskSizeBytes: os.sizeBytes, ...(enc ? { encryptionSettings: vmEncryptionSettings(enc) } : {}) } : undefined,
      dataDisks: disks.filter((d) => !d.os).map((d) => ({ lun: d.lun, name: d.name, ...ref(d), diskSizeBytes: d.sizeBytes })),
    },
    'properties.osProfile': { computerName: vm.computerName ?? vm.name },
    /** rsvault: the VM as recorded in the recovery point. */
    'rsvault.source': source,
  };
}

/** The encryption-info JSON of the documented manual flow. */
export function encryptionInfoJson(keys: RpKeys) {
  const k = keys.kekDetails;
  const b = keys.bekDetails!;
  return {
    OsDiskKeyAndSecretDetails: {
      ...(k ? { KeyBackupData: toStdBase64(k.keyBackupData), KeyUrl: k.keyUrl, KeyVaultId: k.keyVaultId } : {}),
      SecretData: b.secretData,
      SecretUrl: b.secretUrl,
      SecretVaultId: b.secretVaultId,
      ...(b.contentType ? { SecretContentType: b.contentType } : {}),
      ...(b.tags ? { SecretTags: b.tags } : {}),
      ...(!k && b.secretBackupData ? { KeyVaultSecretBackupData: toStdBase64(b.secretBackupData) } : {}),
    },
    EncryptionMechanism: keys.encryptionMechanism ?? 'SinglePass',
  };
}

const COMPUTE_API = '2022-08-01';

/**
 * The ARM template: for blob disks, one Import disk per blob (encryption settings stamped), then the VM attaching
 * them; for managed disks, the VM attaching the restored disks. Parameter VirtualMachineName names the VM and its disks.
 */
export function armTemplate(vm: VmSource, disks: RestoredDisk[], enc: EncryptionTarget | undefined, storageAccountId: string | undefined) {
  const diskName = (d: RestoredDisk) => (d.os ? "[concat(parameters('VirtualMachineName'), '-osdisk')]" : `[concat(parameters('VirtualMachineName'), '-datadisk${d.lun}')]`);
  const diskNameExpr = (d: RestoredDisk) => (d.os ? "concat(parameters('VirtualMachineName'), '-osdisk')" : `concat(parameters('VirtualMachineName'), '-datadisk${d.lun}')`);
  const fromBlobs = disks.every((d) => d.blobUri);
  const diskRef = (d: RestoredDisk) => (fromBlobs ? `[resourceId('Microsoft.Compute/disks', ${diskNameExpr(d)})]` : d.diskId!);
  const diskResources = fromBlobs
    ? disks.map((d) => ({
        type: 'Microsoft.Compute/disks',
        apiVersion: COMPUTE_API,
        name: diskName(d),
        location: "[parameters('location')]",
        properties: {
          ...(d.os ? { osType: vm.osType } : {}),
          creationData: { createOption: 'Import', sourceUri: d.blobUri, ...(storageAccountId ? { storageAccountId } : {}) },
          ...(enc && d.format === 'luks1' ? { encryptionSettingsCollection: encryptionSettingsCollection(enc) } : {}),
        },
      }))
    : [];
  const os = disks.find((d) => d.os);
  return {
    $schema: 'https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#',
    contentVersion: '1.0.0.0',
    parameters: {
      VirtualMachineName: { type: 'String', defaultValue: vm.name, metadata: { description: 'Name of the VM to create (its disks are named after it).' } },
      location: { type: 'String', defaultValue: vm.location },
    },
    variables: {},
    resources: [
      ...diskResources,
      {
        type: 'Microsoft.Compute/virtualMachines',
        apiVersion: COMPUTE_API,
        name: "[parameters('VirtualMachineName')]",
        location: "[parameters('location')]",
        ...(fromBlobs ? { dependsOn: disks.map((d) => `[resourceId('Microsoft.Compute/disks', ${diskNameExpr(d)})]`) } : {}),
        properties: {
          hardwareProfile: { vmSize: vm.vmSize },
          storageProfile: {
            osDisk: os ? { osType: vm.osType, createOption: 'Attach', managedDisk: { id: diskRef(os) }, ...(enc ? { encryptionSettings: vmEncryptionSettings(enc) } : {}) } : undefined,
            dataDisks: disks.filter((d) => !d.os).map((d) => ({ lun: d.lun, createOption: 'Attach', managedDisk: { id: diskRef(d) } })),
          },
          osProfile: { computerName: vm.computerName ?? vm.name, adminUsername: 'azureuser' },
        },
      },
    ],
    outputs: {},
  };
}
