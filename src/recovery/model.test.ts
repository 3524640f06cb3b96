import { describe, it, expect } from 'vitest';
import { ArmError } from '../platform/http/errors.js';
import { containerName, filterDate, isoDuration, itemName, parseContainerName, parseFilter, parseItemName, requireNames, requireVaultName, shortContainerName } from './model.js';
import { chunkSizeFor, parseVmId } from './backup.js';
import { canonicalCode, recoveryErrors } from './errors.js';
import { uuidFrom } from './service.js';

describe('container and item names', () => {
  const ref = { resourceGroup: 'RG1', vmName: 'vm-1', classic: false };
  it('formats as Azure spells them', () => {
    expect(containerName(ref)).toBe('IaasVMContainer;iaasvmcontainerv2;RG1;vm-1');
    expect(itemName(ref)).toBe('VM;iaasvmcontainerv2;RG1;vm-1');
    expect(shortContainerName(ref)).toBe('iaasvmcontainerv2;RG1;vm-1');
    expect(containerName({ ...ref, classic: true })).toBe('IaasVMContainer;iaasvmcontainer;RG1;vm-1');
  });
  it('parses case-insensitively, percent-decoded, 4-part or short form', () => {
    expect(parseContainerName('iaasvmcontainer%3Biaasvmcontainerv2%3Brg1%3Bvm-1')).toEqual({ resourceGroup: 'rg1', vmName: 'vm-1', classic: false });
    expect(parseContainerName('IAASVMCONTAINER;IaaSVMContainerV2;RG1;vm-1')).toEqual({ resourceGroup: 'RG1', vmName: 'vm-1', classic: false });
    expect(parseContainerName('iaasvmcontainerv2;rg1;vm-1')).toMatchObject({ vmName: 'vm-1' });
    expect(parseItemName('vm;iaasvmcontainer;cs1;vm-1')).toEqual({ resourceGroup: 'cs1', vmName: 'vm-1', classic: true });
    expect(parseItemName('VM;iaasvmcontainerv2;rg1;vm-1')).toMatchObject({ classic: false });
    for (const bad of ['vm1', 'VM;sqlcontainer;rg;db', 'foo;iaasvmcontainerv2;rg;vm', 'VM;iaasvmcontainerv2;;vm', 'a;b;c;d;e']) expect(parseItemName(bad)).toBeUndefined();
  });
  it('container and item must name the same VM', () => {
    expect(requireNames('IaasVMContainer;iaasvmcontainerv2;rg;a', 'vm;iaasvmcontainerv2;RG;A')).toMatchObject({ vmName: 'A' });
    expect(() => requireNames('IaasVMContainer;iaasvmcontainerv2;rg;a', 'vm;iaasvmcontainerv2;rg;b')).toThrow(/does not belong/);
    expect(() => requireNames('junk', 'vm;iaasvmcontainerv2;rg;b')).toThrow(ArmError);
  });
  it('vault names: 2-50 chars, letter first, letters/digits/hyphens', () => {
    expect(() => requireVaultName('v1-ok')).not.toThrow();
    for (const bad of ['a', '1abc', 'has_underscore', 'x'.repeat(51)]) expect(() => requireVaultName(bad)).toThrow(/invalid/);
  });
  it('parses VM ids', () => {
    expect(parseVmId('/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm')).toEqual({ resourceGroup: 'rg', vmName: 'vm', classic: false });
    expect(parseVmId('/subscriptions/s/resourceGroups/rg/providers/Microsoft.ClassicCompute/virtualMachines/vm')).toMatchObject({ classic: true });
    expect(parseVmId('/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d')).toBeUndefined();
  });
});

describe('$filter', () => {
  it('parses and-ed clauses with quoted values', () => {
    expect(parseFilter("backupManagementType eq 'AzureIaasVM' and status eq 'In''Progress' and startTime ge '2024-01-01 10:00:00 AM'")).toEqual([
      { field: 'backupmanagementtype', op: 'eq', value: 'AzureIaasVM' },
      { field: 'status', op: 'eq', value: "In'Progress" },
      { field: 'starttime', op: 'ge', value: '2024-01-01 10:00:00 AM' },
    ]);
    expect(parseFilter(undefined)).toEqual([]);
    expect(() => parseFilter('status equals x')).toThrow(/could not be parsed/);
  });
  it('dates: ISO, zone-less (UTC) and az AM/PM form', () => {
    expect(filterDate('t', '2024-01-01T10:00:00Z')).toBe(Date.parse('2024-01-01T10:00:00Z'));
    expect(filterDate('t', '2024-01-01 10:00:00 PM')).toBe(Date.parse('2024-01-01T22:00:00Z'));
    expect(filterDate('t', '2024-01-01 12:30:00 AM')).toBe(Date.parse('2024-01-01T00:30:00Z'));
    expect(filterDate('t', '2024-01-01T10:00:00')).toBe(Date.parse('2024-01-01T10:00:00Z'));
    expect(() => filterDate('startTime', 'yesterday')).toThrow(/startTime/);
  });
});

describe('misc', () => {
  it('ISO-8601 durations', () => {
    expect(isoDuration(12_427)).toBe('PT12.427S');
    expect(isoDuration(3_723_000)).toBe('PT1H2M3S');
  });
  it('chunk size ~1/1024 of the disk, 64 KiB–4 MiB', () => {
    expect(chunkSizeFor(32 * 1024 * 1024)).toBe(64 * 1024);
    expect(chunkSizeFor(1024 ** 3)).toBe(1024 * 1024);
    expect(chunkSizeFor(100 * 1024 ** 3)).toBe(4 * 1024 * 1024);
  });
  it('error codes: the lower-case-v alias reads as the canonical spelling', () => {
    expect(canonicalCode('UserErrorKeyvaultPermissionsNotConfigured')).toBe('UserErrorKeyVaultPermissionsNotConfigured');
    const e = recoveryErrors.kvPermissions('kv1', 'keys backup, secrets get', 'oid');
    expect(e.code).toBe('UserErrorKeyVaultPermissionsNotConfigured');
    expect(e.message).toMatch(/Key Vault 'kv1'.*missing: keys backup, secrets get\./);
    expect(e.numericCode).toBeGreaterThan(0);
  });
  it('scheduled job ids are deterministic per slot', () => {
    expect(uuidFrom('a')).toBe(uuidFrom('a'));
    expect(uuidFrom('a')).not.toBe(uuidFrom('b'));
    expect(uuidFrom('a')).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-a[0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});
