/**
 * Who may do what to the VM behind a protected item, and to the targets of a restore: the checks beyond the vault.
 *
 * The route checks the Recovery Services action on the vault's URL (e.g. protectedItems/write). A vault is not the
 * VM, though: without these checks a principal with a backup role on its own resource group could protect a VM of
 * another group into its own vault and restore its disks and keys. Azure documents the extra roles per operation
 * ("Use Azure role-based access control to manage Azure Backup recovery points", "Minimum role requirements for
 * Azure VM backup"); rsvault enforces them here, where the use cases are, through identity's checkAccess:
 *
 * | operation                         | on the source VM            | on the targets                                     |
 * |-----------------------------------|-----------------------------|----------------------------------------------------|
 * | enable / change protection        | virtualMachines/write, read | —                                                  |
 * | backup now                        | virtualMachines/write, read | —                                                  |
 * | restore disks (blobs)             | virtualMachines/write, read | storageAccounts/write on the storage account       |
 * | restore disks (managed disks)     | virtualMachines/write, read | + resourceGroups/write, disks/write on the group   |
 * | restore as a new VM               | virtualMachines/write, read | + virtualMachines/write, read on the group         |
 * | restore to the original location  | virtualMachines/write, read | disks/write on each disk replaced                  |
 * | restore keys; keyAndSecret of a   | virtualMachines/read        | key vault data-plane permissions (Key Vault checks |
 * | recovery point                    |                             | them itself, as the caller)                        |
 *
 * Scheduled backups check nothing: they act on what an authorized caller protected.
 */
import { authorizationFailed, type Authorizer, type Caller } from '../platform/auth/index.js';

export const VM_READ = 'Microsoft.Compute/virtualMachines/read';
export const VM_WRITE = 'Microsoft.Compute/virtualMachines/write';
export const DISK_WRITE = 'Microsoft.Compute/disks/write';
export const GROUP_WRITE = 'Microsoft.Resources/subscriptions/resourceGroups/write';
export const STORAGE_WRITE = 'Microsoft.Storage/storageAccounts/write';

/** An action the caller needs at a scope. */
export interface Need {
  action: string;
  scope: string;
}

/** What protecting and backing up a VM needs on it (Virtual Machine Contributor, or a role with these two). */
export const protectNeeds = (vmId: string): Need[] => [
  { action: vmAction(vmId, 'write'), scope: vmId },
  { action: vmAction(vmId, 'read'), scope: vmId },
];

/** What seeing a VM among a vault's protectable items needs on it (as reading the VM itself). */
export const readNeeds = (vmId: string): Need[] => [{ action: vmAction(vmId, 'read'), scope: vmId }];

/** What reading a recovery point's key and secret backup (and restoring them) needs on the source VM. */
export const keyNeeds = (vmId: string): Need[] => [{ action: vmAction(vmId, 'read'), scope: vmId }];

/** `Microsoft.Compute/virtualMachines/{verb}`, or the ClassicCompute one for a classic VM's id. */
function vmAction(vmId: string, verb: 'read' | 'write'): string {
  return /\/providers\/Microsoft\.ClassicCompute\//i.test(vmId) ? `Microsoft.ClassicCompute/virtualMachines/${verb}` : verb === 'read' ? VM_READ : VM_WRITE;
}

/** The first need `caller` lacks, or undefined. Internal callers (the service's own workers) pass. */
export async function firstMissing(authz: Authorizer, caller: Caller, needs: Need[]): Promise<Need | undefined> {
  for (const n of needs) if (!(await authz.checkAccess(caller, n.scope, n.action))) return n;
  return undefined;
}

/** Throws 403 AuthorizationFailed (Azure's message: the action and the scope) for the first need `caller` lacks. */
export async function requireAccess(authz: Authorizer, caller: Caller, needs: Need[]): Promise<void> {
  const m = await firstMissing(authz, caller, needs);
  if (m) throw authorizationFailed(caller, m.action, m.scope);
}

export async function mayAccess(authz: Authorizer, caller: Caller, needs: Need[]): Promise<boolean> {
  return (await firstMissing(authz, caller, needs)) === undefined;
}
