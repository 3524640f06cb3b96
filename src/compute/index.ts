/**
 * Compute slice: VMs, managed disks (image files), VM agent, Azure Disk Encryption (→ LUKS1), guest I/O with
 * changed-block tracking. The only file other slices import.
 *
 * For the engine / recovery: `ComputeService` — getVm/getDisk/requireVm/requireDisk, diskImagePath,
 * changedBlocks/beginBackup/markBackedUp/abortBackup (64 KiB bitmap over the image FILE), onBeforeWrite (CoW hook),
 * vmConfig, encryptionInfo, agentStatus, volume keys for LUKS disks.
 */
export { ComputeService, type BeforeWriteHook, type ComputeOptions, type ClassicVm } from './service.js';
export { ComputeStore, computeMigrations } from './store.js';
export { registerComputeRoutes } from './routes.js';
export {
  CBT_BLOCK_SIZE, DISK_TYPE, VM_TYPE, CLASSIC_VM_TYPE,
  type AgentStatus, type ChangedBlocks, type Disk, type DiskEncryptionInfo, type EncryptionSettingsCollection, type OsType, type PowerState, type Vm, type VmProps,
} from './model.js';
