/** Compute types and pure rules: names, sizes, ARM shapes shared by service and routes. */
import { ArmError } from '../platform/http/errors.js';

export const DISK_TYPE = 'Microsoft.Compute/disks';
export const VM_TYPE = 'Microsoft.Compute/virtualMachines';
export const EXT_TYPE = 'Microsoft.Compute/virtualMachines/extensions';
export const CLASSIC_VM_TYPE = 'Microsoft.ClassicCompute/virtualMachines';
export const GiB = 1024 ** 3;
/** Changed-block tracking granularity (the engine's BITMAP_BLOCK_SIZE). */
export const CBT_BLOCK_SIZE = 65536;
export const AGENT_VERSION = '2.7.41491.1102';
export const ADE_EXTENSION_NAMES = ['AzureDiskEncryption', 'AzureDiskEncryptionForLinux'];
export const KEY_ENCRYPTION_ALGORITHMS = ['RSA-OAEP', 'RSA-OAEP-256', 'RSA1_5'] as const;

export type OsType = 'Linux' | 'Windows';
export type PowerState = 'running' | 'stopped' | 'deallocated' | 'starting' | 'stopping';

/** Azure's compute name rule (approximately): 1-80 chars, letters/digits/_-. , starting alphanumeric, not ending in '.' or '-'. */
export function computeNameError(name: string, max = 80): string | undefined {
  if (name.length < 1 || name.length > max) return `it must be 1-${max} characters long`;
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) return 'it must start with a letter or digit and contain only letters, digits, underscores, periods and hyphens';
  if (/[.-]$/.test(name)) return 'it cannot end with a period or hyphen';
  return undefined;
}

export function requireName(kind: string, name: string, max?: number): void {
  const e = computeNameError(name, max);
  if (e) throw new ArmError(400, 'InvalidResourceName', `The ${kind} name '${name}' is invalid: ${e}.`, { target: 'name' });
}

export interface KeyVaultRef {
  sourceVault: { id: string };
  secretUrl?: string;
  keyUrl?: string;
}

/** One entry of a managed disk's `encryptionSettingsCollection.encryptionSettings` (single-pass ADE). */
export interface DiskEncryptionSetting {
  diskEncryptionKey: { sourceVault: { id: string }; secretUrl: string };
  keyEncryptionKey?: { sourceVault: { id: string }; keyUrl: string } | undefined;
}

export interface EncryptionSettingsCollection {
  enabled: boolean;
  encryptionSettings: DiskEncryptionSetting[];
  encryptionSettingsVersion: string;
}

/** VM osDisk.encryptionSettings (dual-pass / legacy). */
export interface VmDiskEncryptionSettings {
  enabled?: boolean;
  diskEncryptionKey?: { sourceVault: { id: string }; secretUrl: string };
  keyEncryptionKey?: { sourceVault: { id: string }; keyUrl: string };
}

export interface Disk {
  id: string;
  name: string;
  subscriptionId: string;
  resourceGroup: string;
  location: string;
  tags: Record<string, string>;
  uniqueId: string;
  imagePath: string;
  owned: boolean;
  sizeBytes: number;
  osType?: OsType | undefined;
  state: string;
  managedBy?: string | undefined;
  format: 'raw' | 'luks1';
  /** Encrypted and rsvault holds no volume key for it (import without passphrase). */
  locked: boolean;
  encryptionSettingsCollection?: EncryptionSettingsCollection | undefined;
  props: Record<string, unknown>;
  createdAt: number;
}

export interface DataDiskRef {
  lun: number;
  name: string;
  diskId: string;
  createOption: string;
  caching?: string | undefined;
}

export interface VmProps {
  hardwareProfile: { vmSize: string };
  storageProfile: {
    imageReference?: unknown;
    osDisk: { name: string; diskId: string; osType: OsType; createOption: string; caching?: string | undefined; encryptionSettings?: VmDiskEncryptionSettings | undefined; deleteOption?: string | undefined };
    dataDisks: DataDiskRef[];
  };
  osProfile?: Record<string, unknown> | undefined;
  networkProfile?: unknown;
  diagnosticsProfile?: unknown;
}

export interface Vm {
  id: string;
  name: string;
  subscriptionId: string;
  resourceGroup: string;
  location: string;
  tags: Record<string, string>;
  vmId: string;
  osType: OsType;
  powerState: PowerState;
  agentInstalled: boolean;
  agentVersion: string;
  props: VmProps;
  createdAt: number;
}

export interface AgentStatus {
  installed: boolean;
  /** Ready only when installed and the VM runs. */
  status: 'Ready' | 'NotReady' | 'NotInstalled';
  version?: string | undefined;
}

export interface ChangedBlocks {
  /** False when rsvault cannot vouch for the bitmap (no successful backup yet after an import, outside change, re-encryption). */
  valid: boolean;
  blockSize: number;
  /** One bit per 64 KiB block of the image FILE (ciphertext for LUKS disks), least-significant bit first. */
  bitmap: Buffer;
  /** Image file size the bitmap covers. */
  imageSize: number;
  /** Why invalid, when it is. */
  reason?: string | undefined;
  /** Increments with every recorded write; pass it to markBackedUp. */
  generation: number;
}

export interface DiskEncryptionInfo {
  diskId: string;
  encrypted: boolean;
  format: 'raw' | 'luks1';
  secretUrl?: string | undefined;
  secretVaultId?: string | undefined;
  keyUrl?: string | undefined;
  keyVaultId?: string | undefined;
}

export const diskSizeGB = (bytes: number): number => Math.ceil(bytes / GiB);
