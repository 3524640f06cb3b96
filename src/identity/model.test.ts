import { describe, it, expect } from 'vitest';
import { actionMatches, findRole, roleAllows, scopeCovers } from './model.js';

describe('role matching', () => {
  it('matches wildcards case-insensitively', () => {
    expect(actionMatches('*/read', 'Microsoft.Resources/subscriptions/resourceGroups/read')).toBe(true);
    expect(actionMatches('*/read', 'Microsoft.Resources/subscriptions/resourceGroups/write')).toBe(false);
    expect(actionMatches('Microsoft.Authorization/*/Write', 'microsoft.authorization/roleAssignments/write')).toBe(true);
  });
  it('applies built-in roles with Azure meanings', () => {
    const reader = findRole('Reader')!;
    const contributor = findRole('b24988ac-6180-42a0-ab88-20f7382dd24c')!;
    const owner = findRole('owner')!;
    const bop = findRole('Backup Operator')!;
    expect(roleAllows(reader, 'Microsoft.Resources/subscriptions/resourceGroups/write')).toBe(false);
    expect(roleAllows(contributor, 'Microsoft.Resources/subscriptions/resourceGroups/write')).toBe(true);
    expect(roleAllows(contributor, 'Microsoft.Authorization/roleAssignments/write')).toBe(false);
    expect(roleAllows(owner, 'Microsoft.Authorization/roleAssignments/write')).toBe(true);
    expect(roleAllows(bop, 'Microsoft.RecoveryServices/Vaults/backupFabrics/protectionContainers/protectedItems/backup/action')).toBe(true);
    expect(roleAllows(bop, 'Microsoft.RecoveryServices/Vaults/backupFabrics/protectionContainers/protectedItems/delete')).toBe(false);
    expect(roleAllows(findRole('Backup Reader')!, 'Microsoft.RecoveryServices/Vaults/backupJobs/read')).toBe(true);
    expect(roleAllows(findRole('Backup Reader')!, 'Microsoft.RecoveryServices/Vaults/write')).toBe(false);
    const vmc = findRole('Virtual Machine Contributor')!;
    expect(roleAllows(vmc, 'Microsoft.Compute/virtualMachines/write')).toBe(true);
    expect(roleAllows(vmc, 'Microsoft.Compute/disks/write')).toBe(true);
    expect(roleAllows(vmc, 'Microsoft.KeyVault/vaults/write')).toBe(false);
  });
  it('covers child scopes on segment boundaries only', () => {
    expect(scopeCovers('/subscriptions/S', '/subscriptions/s/resourceGroups/rg1')).toBe(true);
    expect(scopeCovers('/subscriptions/s/resourceGroups/rg1', '/subscriptions/s/resourcegroups/rg10')).toBe(false);
    expect(scopeCovers('/subscriptions/s/resourceGroups/rg1', '/subscriptions/s/resourceGroups/rg1/providers/X/y/z')).toBe(true);
  });
  it('never resolves dot segments: a scope with . or .. covers nothing and is covered by nothing', () => {
    expect(scopeCovers('/subscriptions/s/resourceGroups/rg1', '/subscriptions/s/resourceGroups/rg1/../..')).toBe(false);
    expect(scopeCovers('/subscriptions/s/resourceGroups/rg1', '/subscriptions/s/resourceGroups/rg1/./x')).toBe(false);
    expect(scopeCovers('/subscriptions/s/resourceGroups/rg1/../..', '/subscriptions/s/resourceGroups/rg1/../../resourceGroups/rg2')).toBe(false);
  });
});
