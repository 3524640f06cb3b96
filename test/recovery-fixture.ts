/**
 * Shared set-up for the Recovery Services suites: a resource group, a key vault with a KEK, VMs (imported small
 * disks, optionally ADE-encrypted), and request helpers for the backup API.
 */
import https from 'node:https';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestServer } from './helpers/server.js';
import type { ApiResponse, RsvaultClient } from '../src/client/index.js';

export const COMPUTE_API = '2022-08-01';
export const KV_API = '2023-07-01';
export const RS_API = '2023-04-01';
export const BK_API = '2023-02-01';
export const MiB = 1024 * 1024;
export const env = { RSVAULT_LUKS_ITERATIONS: '1000' };

export class Fixture {
  readonly tmp = mkdtempSync(path.join(os.tmpdir(), 'rsv-rec-'));
  constructor(readonly s: TestServer, readonly rg: string) {}
  get sub() {
    return this.s.creds.subscriptionId;
  }
  get c(): RsvaultClient {
    return this.s.client;
  }
  rgPath(rg = this.rg) {
    return `/subscriptions/${this.sub}/resourceGroups/${rg}`;
  }
  vmId(name: string, rg = this.rg) {
    return `${this.rgPath(rg)}/providers/Microsoft.Compute/virtualMachines/${name}`;
  }
  kvId(name: string) {
    return `${this.rgPath()}/providers/Microsoft.KeyVault/vaults/${name}`;
  }
  vaultPath(name: string) {
    return `${this.rgPath()}/providers/Microsoft.RecoveryServices/vaults/${name}`;
  }
  itemPath(vault: string, vm: string, rg = this.rg) {
    return `${this.vaultPath(vault)}/backupFabrics/Azure/protectionContainers/IaasVMContainer;iaasvmcontainerv2;${rg};${vm}/protectedItems/VM;iaasvmcontainerv2;${rg};${vm}`;
  }
  async group(location = 'local') {
    await this.c.request('PUT', this.rgPath(), { query: { 'api-version': '2021-04-01' }, body: { location } });
  }
  async keyVault(name: string, withKek = true) {
    const policy = [{ tenantId: this.s.creds.tenantId, objectId: this.s.creds.objectId, permissions: { keys: ['all'], secrets: ['all'] } }];
    await this.c.request('PUT', this.kvId(name), { query: { 'api-version': KV_API }, body: { location: 'local', properties: { tenantId: this.s.creds.tenantId, sku: { family: 'A', name: 'standard' }, accessPolicies: policy, enabledForDiskEncryption: true } } });
    if (withKek) await this.kv(name, 'POST', '/keys/kek/create', { kty: 'RSA', key_size: 2048 });
  }
  kv<T>(vault: string, method: string, p: string, body?: unknown) {
    return this.c.request<T>(method, p, { baseUrl: `https://${vault}.vault.localhost:${this.s.port}`, resource: 'https://vault.localhost', query: { 'api-version': '7.4' }, body });
  }
  async bmsObjectId(): Promise<string> {
    const r = await this.c.request<{ value: { id: string }[] }>('GET', '/v1.0/servicePrincipals', { query: { $filter: "displayName eq 'Backup Management Service'" } });
    return r.value[0]!.id;
  }
  /** The "Azure Backup" access-policy template for the Backup Management Service (or `remove`). */
  async grantBackup(kv: string, kind: 'add' | 'remove' = 'add', perms = { keys: ['get', 'list', 'backup'], secrets: ['get', 'list', 'backup'] }) {
    await this.c.request('PUT', `${this.kvId(kv)}/accessPolicies/${kind}`, { query: { 'api-version': KV_API }, body: { properties: { accessPolicies: [{ tenantId: this.s.creds.tenantId, objectId: await this.bmsObjectId(), permissions: perms }] } } });
  }
  /** A Linux VM with one imported OS disk of `size` random bytes. */
  async vm(name: string, size = 8 * MiB, o: { agent?: boolean; location?: string } = {}) {
    const file = path.join(this.tmp, `${name}.raw`);
    writeFileSync(file, randomBytes(size));
    const disk = `${this.rgPath()}/providers/Microsoft.Compute/disks/${name}-os`;
    await this.c.request('PUT', disk, { query: { 'api-version': COMPUTE_API }, body: { location: o.location ?? 'local', properties: { creationData: { createOption: 'Import', sourceUri: file } } } });
    await this.c.request('PUT', this.vmId(name), {
      query: { 'api-version': COMPUTE_API },
      body: { location: o.location ?? 'local', properties: { hardwareProfile: { vmSize: 'Standard_DS1_v2' }, osProfile: { computerName: name, adminUsername: 'azureuser' }, storageProfile: { osDisk: { osType: 'Linux', createOption: 'Attach', managedDisk: { id: disk } }, dataDisks: [] } } },
    });
    if (o.agent === false) await this.c.request('POST', `${this.vmId(name)}/vmAgent/uninstall`, { query: { 'api-version': COMPUTE_API } });
  }
  /** Azure Disk Encryption (single pass) with the vault's BEK and, unless `kek` is false, its KEK. */
  async encrypt(vm: string, kv: string, kek = true) {
    const settings: Record<string, unknown> = { EncryptionOperation: 'EnableEncryption', KeyVaultURL: `https://${kv}.vault.localhost:${this.s.port}/`, KeyVaultResourceId: this.kvId(kv), VolumeType: 'All' };
    if (kek) Object.assign(settings, { KeyEncryptionKeyURL: `https://${kv}.vault.localhost:${this.s.port}/keys/kek`, KekVaultResourceId: this.kvId(kv), KeyEncryptionAlgorithm: 'RSA-OAEP' });
    const res = await this.c.send('PUT', `${this.vmId(vm)}/extensions/AzureDiskEncryptionForLinux`, { query: { 'api-version': COMPUTE_API }, body: { location: 'local', properties: { publisher: 'Microsoft.Azure.Security', type: 'AzureDiskEncryptionForLinux', typeHandlerVersion: '1.1', settings } } });
    if (res.status >= 300) throw new Error(`encrypt ${vm}: ${res.status} ${JSON.stringify(res.body)}`);
    await this.c.waitForOperation(res, { intervalMs: 100, timeoutMs: 60_000 });
  }
  async guestWrite(vm: string, offset: number, data: Buffer) {
    const token = await this.c.token();
    const url = `${this.s.origin}${this.vmId(vm)}/guestIo/write?api-version=${COMPUTE_API}&osDisk=true&offset=${offset}`;
    const status = await new Promise<number>((resolve, reject) => {
      const r = https.request(url, { method: 'POST', ca: this.s.ca, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream', 'content-length': data.length } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      r.on('error', reject);
      r.end(data);
    });
    if (status !== 200) throw new Error(`guest write ${status}`);
  }
  async createVault(name: string, location = 'local') {
    return this.c.send('PUT', this.vaultPath(name), { query: { 'api-version': RS_API }, body: { location, sku: { name: 'Standard' }, properties: {} } });
  }
  /** PUT protectedItems; returns the 202 response. */
  enable(vault: string, vm: string, policy = 'DefaultPolicy', extra: Record<string, unknown> = {}) {
    return this.c.send('PUT', this.itemPath(vault, vm), { query: { 'api-version': BK_API }, body: { properties: { protectedItemType: 'Microsoft.Compute/virtualMachines', sourceResourceId: this.vmId(vm), policyId: `${this.vaultPath(vault)}/backupPolicies/${policy}`, ...extra } } });
  }
  backup(vault: string, vm: string, expiry?: string) {
    return this.c.send('POST', `${this.itemPath(vault, vm)}/backup`, { query: { 'api-version': BK_API }, body: { properties: { objectType: 'IaasVMBackupRequest', ...(expiry ? { recoveryPointExpiryTimeInUTC: expiry } : {}) } } });
  }
  /** Polls the Azure-AsyncOperation URL until it ends; returns the OperationStatus body (no throw on Failed). */
  async opStatus(res: ApiResponse<unknown>): Promise<OpStatus> {
    const url = new URL(String(res.headers['azure-asyncoperation']));
    for (let i = 0; i < 600; i++) {
      const st = await this.c.request<OpStatus>('GET', url.pathname + url.search);
      if (st.status !== 'InProgress') return st;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error('operation did not finish');
  }
  job(vault: string, id: string) {
    return this.c.request<Job>('GET', `${this.vaultPath(vault)}/backupJobs/${id}`, { query: { 'api-version': BK_API } });
  }
  async waitJob(vault: string, id: string, timeoutMs = 60_000): Promise<Job> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const j = await this.job(vault, id);
      if (!['InProgress', 'Cancelling'].includes(j.properties.status)) return j;
      if (Date.now() > end) throw new Error(`job ${id} still ${j.properties.status}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  item(vault: string, vm: string) {
    return this.c.request<Item>('GET', this.itemPath(vault, vm), { query: { 'api-version': BK_API } });
  }
}

export interface OpStatus {
  id: string;
  status: string;
  error?: { code: string; message: string };
  properties: { objectType: string; jobId: string } | null;
}
export interface Job {
  id: string;
  name: string;
  properties: {
    operation: string;
    status: string;
    entityFriendlyName: string;
    errorDetails: { errorCode: number; errorTitle: string; errorString: string; recommendations: string[] }[];
    extendedInfo: { tasksList: { taskId: string; status: string }[]; propertyBag: Record<string, string>; progressPercentage: number };
  };
}
export interface Item {
  id: string;
  name: string;
  properties: { protectionState: string; lastBackupStatus: string; lastBackupTime: string; policyName: string; containerName: string; healthStatus: string; isScheduledForDeferredDelete: boolean; extendedInfo: { recoveryPointCount: number } };
}
export interface RecoveryPoint {
  name: string;
  properties: {
    objectType: string;
    isSourceVMEncrypted: boolean;
    recoveryPointTime: string;
    keyAndSecret?: { kekDetails?: { keyUrl: string; keyVaultId: string; keyBackupData: string }; bekDetails: { secretUrl: string; secretVaultId: string; secretData: string }; encryptionMechanism: string };
    recoveryPointProperties: { expiryTime: string };
  };
}
