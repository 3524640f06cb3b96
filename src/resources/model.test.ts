import { describe, it, expect } from 'vitest';
import { formatResourceId, parseResourceId, resourceGroupNameError } from './model.js';

describe('resource ids', () => {
  it('round-trips nested ids and decodes percent-encoded segments', () => {
    const id = '/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.RecoveryServices/vaults/v1/backupFabrics/Azure/protectionContainers/IaasVMContainer%3Biaasvmcontainerv2%3Brg1%3Bvm1';
    const r = parseResourceId(id)!;
    expect(r).toMatchObject({ subscriptionId: 's1', resourceGroup: 'rg1', provider: 'Microsoft.RecoveryServices', type: 'vaults/backupFabrics/protectionContainers', name: 'v1/Azure/IaasVMContainer;iaasvmcontainerv2;rg1;vm1' });
    expect(formatResourceId(r)).toBe(decodeURIComponent(id));
  });
  it('parses case-insensitively and rejects malformed ids', () => {
    expect(parseResourceId('/SUBSCRIPTIONS/s/RESOURCEGROUPS/rg')).toEqual({ subscriptionId: 's', resourceGroup: 'rg' });
    expect(parseResourceId('/foo/bar')).toBeUndefined();
    expect(parseResourceId('/subscriptions/s/resourceGroups/rg/providers/X/y')).toBeUndefined();
  });
  it('validates resource group names', () => {
    expect(resourceGroupNameError('rg-1_(a).b')).toBeUndefined();
    expect(resourceGroupNameError('bad.')).toMatch(/period/);
    expect(resourceGroupNameError('a/b')).toMatch(/only letters/);
    expect(resourceGroupNameError('x'.repeat(91))).toMatch(/1-90/);
  });
});
