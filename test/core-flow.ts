/**
 * The core backup flow as reusable steps (PostgreSQL and scale-out suites): encrypted VMs protected in a vault,
 * backups, restores of a recovery point to a storage account, and the bytes to compare.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import { Fixture, BK_API, COMPUTE_API, type Job } from './recovery-fixture.js';

export const ST_API = '2023-01-01';

export class CoreFlow extends Fixture {
  saId(sa: string) {
    return `${this.rgPath()}/providers/Microsoft.Storage/storageAccounts/${sa}`;
  }
  async storageAccount(sa: string) {
    await this.c.request('PUT', this.saId(sa), { query: { 'api-version': ST_API }, body: { location: 'local', sku: { name: 'Standard_LRS' }, kind: 'StorageV2' } });
  }
  /** Group, key vault (KEK, Azure Backup policy for the BMS), encrypted VMs with random disks, vault, protection. */
  async protectedEncryptedVms(kv: string, vault: string, vms: string[], size: number) {
    await this.group();
    await this.keyVault(kv);
    await Promise.all(vms.map((vm) => this.vm(vm, size)));
    for (const vm of vms) await this.encrypt(vm, kv);
    await this.grantBackup(kv);
    await this.createVault(vault);
    for (const vm of vms) {
      const st = await this.opStatus(await this.enable(vault, vm));
      expect(st.status, JSON.stringify(st)).toBe('Succeeded');
    }
  }
  /** The OS disk image of a VM as the server stores it (LUKS1 for an encrypted VM). */
  async imagePath(vm: string): Promise<string> {
    const d = await this.c.request<{ properties: { rsvault: { imagePath: string } } }>('GET', `${this.rgPath()}/providers/Microsoft.Compute/disks/${vm}-os`, { query: { 'api-version': COMPUTE_API } });
    return d.properties.rsvault.imagePath;
  }
  async imageBytes(vm: string): Promise<Buffer> {
    return readFileSync(await this.imagePath(vm));
  }
  /** Starts a backup; returns its job id. */
  async startBackup(vault: string, vm: string): Promise<string> {
    const res = await this.backup(vault, vm);
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    const st = await this.opStatus(res);
    return st.properties!.jobId;
  }
  async restoreToAccount(vault: string, vm: string, rpId: string, sa: string): Promise<string> {
    const res = await this.c.send('POST', `${this.itemPath(vault, vm)}/recoveryPoints/${rpId}/restore`, {
      query: { 'api-version': BK_API },
      body: { properties: { objectType: 'IaasVMRestoreRequest', recoveryType: 'RestoreDisks', recoveryPointId: rpId, sourceResourceId: this.vmId(vm), storageAccountId: this.saId(sa), region: 'local' } },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    const st = await this.opStatus(res);
    expect(st.properties?.jobId, JSON.stringify(st)).toBeTruthy();
    return st.properties!.jobId;
  }
  /** The restored OS disk blob of a completed restore job, read from the storage account's directory. */
  restoredOsDisk(job: Job, sa: string): Buffer {
    const bag = job.properties.extendedInfo.propertyBag;
    const container = bag['Config Blob Container Name'];
    expect(container, JSON.stringify(bag)).toBeTruthy();
    const uri = bag['OS Disk Blob Uri']!;
    return readFileSync(path.join(this.s.dataDir, 'storage', sa, container!, decodeURIComponent(uri.split('/').pop()!)));
  }
}
