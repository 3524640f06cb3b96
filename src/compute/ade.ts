/**
 * Azure Disk Encryption: the AzureDiskEncryption(ForLinux) VM extension. Enable generates a BEK (a passphrase: base64
 * of 127 random bytes, as the Linux extension does), stores it in the Key Vault as a secret named by a GUID (wrapped
 * with the KEK when one is given), converts each selected disk in place to LUKS1 with the BEK as passphrase, and
 * stamps versioned secret/key URLs on the disks (encryptionSettingsCollection "1.1") and the VM's OS
 * disk. Windows VMs get the same flow and metadata (per-volume BEK, VolumeLetter tag); their volumes are LUKS1 too.
 * The URLs are the reachable ones of keyvault urls.ts (with the port unless 443), not Azure's port-less form: clients
 * here fetch the BEK by exactly the URL they find on the VM.
 * All Key Vault calls act as the caller, through the vault's normal access checks.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { ArmError } from '../platform/http/errors.js';
import { KeyVaultError, parseObjectUrl, type KeyVaultService, type KvPrincipal, type EncryptionAlgorithm, formatMissing } from '../keyvault/index.js';
import { KEY_ENCRYPTION_ALGORITHMS, type Disk, type EncryptionSettingsCollection, type Vm } from './model.js';
import type { ComputeService } from './service.js';
import { kvToArm } from './platform-keys.js';


export interface AdeSettings {
  EncryptionOperation: string;
  KeyVaultURL?: string | undefined;
  KeyVaultResourceId?: string | undefined;
  KeyEncryptionKeyURL?: string | undefined;
  KekVaultResourceId?: string | undefined;
  KeyEncryptionAlgorithm?: string | undefined;
  VolumeType?: string | undefined;
}

export interface AdePlan {
  operation: 'EnableEncryption' | 'DisableEncryption';
  volumeType: 'OS' | 'Data' | 'All';
  disks: { disk: Disk; os: boolean; lun?: number | undefined }[];
  vaultId?: string | undefined;
  vaultName?: string | undefined;
  kek?: { vaultId: string; vaultName: string; name: string; version: string; url: string } | undefined;
  algorithm?: EncryptionAlgorithm | undefined;
}

const bad = (msg: string, target: string, rec?: string) => new ArmError(400, 'InvalidParameter', msg, { target: `properties.settings.${target}`, recommendation: rec });

/** Validates the extension settings against the VM and the vaults; throws a clear ArmError before anything changes. */
export async function planAde(compute: ComputeService, kv: KeyVaultService | undefined, vm: Vm, s: AdeSettings, caller: KvPrincipal): Promise<AdePlan> {
  const op = (s.EncryptionOperation ?? '').toLowerCase();
  const operation = op === 'enableencryption' || op === 'enableencryptionformat' || op === 'enableencryptionformatall' ? 'EnableEncryption' : op === 'disableencryption' ? 'DisableEncryption' : undefined;
  if (!operation) throw bad(`EncryptionOperation '${s.EncryptionOperation}' is not supported; use EnableEncryption or DisableEncryption.`, 'EncryptionOperation');
  const vt = (s.VolumeType ?? 'All').toLowerCase();
  const volumeType = vt === 'os' ? 'OS' : vt === 'data' ? 'Data' : vt === 'all' ? 'All' : undefined;
  if (!volumeType) throw bad(`VolumeType '${s.VolumeType}' is invalid; use OS, Data or All.`, 'VolumeType');
  const status = compute.agentStatusOf(vm);
  if (status.status !== 'Ready') {
    throw new ArmError(409, 'VMAgentStatusCommunicationError', `VM '${vm.name}' has not reported status for the VM agent (agent ${status.status}); extensions cannot run.`, {
      recommendation: vm.powerState !== 'running' ? `Start the VM: rsvault vm start -g ${vm.resourceGroup} -n ${vm.name}` : `Install the VM agent: rsvault vm agent install -g ${vm.resourceGroup} -n ${vm.name}`,
    });
  }
  const disks: AdePlan['disks'] = [];
  for (const x of compute.vmDisks(vm)) {
    if ((volumeType === 'OS' && !x.os) || (volumeType === 'Data' && x.os)) continue;
    disks.push({ disk: await compute.requireDisk(x.diskId), os: x.os, lun: x.lun });
  }
  if (operation === 'DisableEncryption') {
    return { operation, volumeType, disks: disks.filter((d) => d.disk.format === 'luks1') };
  }
  if (disks.length === 0) throw bad(`VM '${vm.name}' has no ${volumeType === 'Data' ? 'data' : ''} volumes to encrypt for VolumeType '${volumeType}'.`, 'VolumeType');
  const already = disks.find((d) => d.disk.format === 'luks1');
  if (already) throw new ArmError(409, 'DiskAlreadyEncrypted', `Disk '${already.disk.name}' of VM '${vm.name}' is already encrypted.`, { recommendation: 'Pick a VolumeType that leaves it out, or disable encryption first.' });
  if (!kv) throw new ArmError(503, 'KeyVaultUnavailable', 'The Key Vault service is not available in this server.');
  if (!s.KeyVaultURL && !s.KeyVaultResourceId) throw bad('KeyVaultURL or KeyVaultResourceId is required to enable encryption.', 'KeyVaultResourceId', 'az-style: --disk-encryption-keyvault <vault name or id>');

  // The BEK vault.
  const vault = s.KeyVaultResourceId ? await kv.getVault(s.KeyVaultResourceId) : s.KeyVaultURL ? await kv.getVaultByName(parseObjectUrl(s.KeyVaultURL.replace(/\/?$/, '/x/y'))?.vaultName ?? '') : undefined;
  if (!vault) throw new ArmError(404, 'KeyVaultNotFound', `The key vault '${s.KeyVaultResourceId ?? s.KeyVaultURL}' for disk encryption does not exist.`, { target: 'properties.settings.KeyVaultResourceId', recommendation: 'Create it with --enabled-for-disk-encryption, or give the right vault.' });
  if (s.KeyVaultURL) {
    const host = safeHost(s.KeyVaultURL);
    if (!host || host.split('.')[0] !== vault.name.toLowerCase()) throw bad(`KeyVaultURL '${s.KeyVaultURL}' does not belong to vault '${vault.id}'.`, 'KeyVaultURL');
  }
  if (!vault.enabledForDiskEncryption) {
    throw new ArmError(400, 'KeyVaultNotEnabledForDiskEncryption', `The key vault '${vault.name}' is not enabled for disk encryption (enabledForDiskEncryption is false).`, {
      target: 'properties.settings.KeyVaultResourceId',
      recommendation: `Enable it: rsvault keyvault update -n ${vault.name} -g ${vault.resourceGroup} --enabled-for-disk-encryption true`,
    });
  }
  if (vault.location.toLowerCase() !== vm.location.toLowerCase()) {
    throw new ArmError(400, 'KeyVaultAndVMInDifferentRegions', `The key vault '${vault.name}' is in '${vault.location}' but VM '${vm.name}' is in '${vm.location}'; they must be in the same region.`);
  }
  const missingSecrets = await kv.hasPermissions(vault.id, caller.objectId, { secrets: ['set'] });

  // The KEK.
  let kek: AdePlan['kek'];
  let algorithm: EncryptionAlgorithm | undefined;
  if (s.KeyEncryptionKeyURL) {
    const alg = s.KeyEncryptionAlgorithm ?? 'RSA-OAEP';
    if (!(KEY_ENCRYPTION_ALGORITHMS as readonly string[]).includes(alg)) throw bad(`KeyEncryptionAlgorithm '${alg}' is invalid; use one of ${KEY_ENCRYPTION_ALGORITHMS.join(', ')}.`, 'KeyEncryptionAlgorithm');
    algorithm = alg as EncryptionAlgorithm;
    const ref = parseObjectUrl(s.KeyEncryptionKeyURL);
    if (!ref || ref.collection !== 'keys') throw bad(`KeyEncryptionKeyURL '${s.KeyEncryptionKeyURL}' is not a Key Vault key URL (https://{vault}.../keys/{name}/{version}).`, 'KeyEncryptionKeyURL');
    const kekVault = s.KekVaultResourceId ? await kv.getVault(s.KekVaultResourceId) : await kv.getVaultByName(ref.vaultName);
    if (!kekVault) throw new ArmError(404, 'KeyVaultNotFound', `The key vault '${s.KekVaultResourceId ?? ref.vaultName}' holding the key encryption key does not exist.`, { target: 'properties.settings.KekVaultResourceId' });
    if (kekVault.name.toLowerCase() !== ref.vaultName) throw bad(`KeyEncryptionKeyURL '${s.KeyEncryptionKeyURL}' does not belong to vault '${kekVault.id}'.`, 'KeyEncryptionKeyURL');
    if (!kekVault.enabledForDiskEncryption) {
      throw new ArmError(400, 'KeyVaultNotEnabledForDiskEncryption', `The key vault '${kekVault.name}' holding the key encryption key is not enabled for disk encryption.`, {
        target: 'properties.settings.KekVaultResourceId',
        recommendation: `Enable it: rsvault keyvault update -n ${kekVault.name} -g ${kekVault.resourceGroup} --enabled-for-disk-encryption true`,
      });
    }
    const missingKeys = await kv.hasPermissions(kekVault.id, caller.objectId, { keys: ['get', 'wrapKey'] });
    throwMissing(vault.name, missingSecrets, kekVault.name, missingKeys);
    try {
      const key = await kv.getKey(caller, kekVault.id, ref.name, ref.version);
      const kid = key.key.kid ?? '';
      const version = kid.split('/').pop() ?? '';
      kek = { vaultId: kekVault.id, vaultName: kekVault.name, name: ref.name, version, url: kv.urls.canonical(kid) };
    } catch (e) {
      if (e instanceof KeyVaultError && e.status === 404) {
        throw new ArmError(400, 'KeyEncryptionKeyNotFound', `The key encryption key '${s.KeyEncryptionKeyURL}' was not found in vault '${kekVault.name}'.`, {
          target: 'properties.settings.KeyEncryptionKeyURL',
          recommendation: `Create it: rsvault keyvault key create --vault-name ${kekVault.name} -n ${ref.name} --kty RSA`,
        });
      }
      throw kvToArm(e);
    }
  } else if (s.KekVaultResourceId) {
    throw bad('KekVaultResourceId is given but KeyEncryptionKeyURL is missing.', 'KeyEncryptionKeyURL', 'Give --key-encryption-key with the KEK, or leave out --key-encryption-keyvault.');
  } else {
    throwMissing(vault.name, missingSecrets);
  }
  return { operation, volumeType, disks, vaultId: vault.id, vaultName: vault.name, kek, algorithm };
}

function throwMissing(vaultName: string, m: { keys: string[]; secrets: string[] }, kekVaultName?: string, mk?: { keys: string[]; secrets: string[] }): void {
  const parts: string[] = [];
  if (m.keys.length || m.secrets.length) parts.push(`vault '${vaultName}': ${formatMissing(m)}`);
  if (mk && kekVaultName && (mk.keys.length || mk.secrets.length)) parts.push(`vault '${kekVaultName}': ${formatMissing(mk)}`);
  if (parts.length) {
    throw new ArmError(403, 'KeyVaultAccessDenied', `The caller does not have the Key Vault permissions Azure Disk Encryption needs; missing: ${parts.join('; ')}.`, {
      recommendation: `Grant them: rsvault keyvault set-policy -n ${vaultName} --object-id <caller> --secret-permissions set get --key-permissions get wrapKey`,
    });
  }
}

function safeHost(url: string): string | undefined {
  try {
    return new URL(url).hostname.toLowerCase();
  } catch {
    return undefined;
  }
}


/** Linux ADE passphrase: base64 of 127 random bytes (172 ASCII characters). */
export function newBek(): string {
  return randomBytes(127).toString('base64');
}

/** Runs a validated plan (the long-running part). */
export async function runAde(compute: ComputeService, kv: KeyVaultService | undefined, vm: Vm, plan: AdePlan, caller: KvPrincipal): Promise<{ message: string }> {
  if (plan.operation === 'DisableEncryption') {
    for (const { disk, os } of plan.disks) {
      await compute.withDiskLock(disk.id, async () => {
        // Fresh row: the plan was made before the operation started.
        const cur = await compute.requireDisk(disk.id);
        if (cur.format === 'luks1') await compute.convertDisk(cur, { format: 'raw', osOfVm: os ? vm.id : undefined });
      });
    }
    const osDone = plan.disks.some((d) => d.os) || plan.volumeType !== 'Data';
    if (osDone) await compute.updateVmProps(vm.id, (p) => ({ ...p, storageProfile: { ...p.storageProfile, osDisk: { ...p.storageProfile.osDisk, encryptionSettings: undefined } } }));
    return { message: `Decryption succeeded for ${plan.disks.length} volume(s).` };
  }
  if (!kv || !plan.vaultId) throw new ArmError(503, 'KeyVaultUnavailable', 'The Key Vault service is not available.');
  const windows = vm.osType === 'Windows';
  // Linux: one passphrase for the VM (one BEK VOLUME file); Windows: one BEK per volume.
  const groups: { beks: string; disks: AdePlan['disks'] }[] = windows ? plan.disks.map((d) => ({ beks: newBek(), disks: [d] })) : [{ beks: newBek(), disks: plan.disks }];
  let letter = 'D'.charCodeAt(0);
  const machineName = /^[\w-]+$/.test(String((vm.props.osProfile as { computerName?: string } | undefined)?.computerName ?? vm.name)) ? String((vm.props.osProfile as { computerName?: string } | undefined)?.computerName ?? vm.name) : '';
  for (const g of groups) {
    const secretName = randomUUID();
    const pass = Buffer.from(g.beks, 'ascii');
    let value: string;
    const tags: Record<string, string> = { DiskEncryptionKeyFileName: windows ? `${secretName}.BEK` : 'LinuxPassPhraseFileName', MachineName: machineName };
    if (windows) tags.VolumeLetter = g.disks[0]!.os ? 'C:\\' : `${String.fromCharCode(letter++)}:\\`;
    let contentType = 'BEK';
    if (plan.kek) {
      try {
        const w = await kv.wrapKey(caller, plan.kek.vaultId, plan.kek.name, plan.kek.version, plan.algorithm ?? 'RSA-OAEP', pass);
        value = w.value.toString('base64url');
      } catch (e) {
        throw kvToArm(e);
      }
      contentType = 'Wrapped BEK';
      tags.DiskEncryptionKeyEncryptionAlgorithm = plan.algorithm ?? 'RSA-OAEP';
      tags.DiskEncryptionKeyEncryptionKeyURL = plan.kek.url;
    } else {
      value = pass.toString('base64');
    }
    let secretUrl: string;
    try {
      const sb = await kv.setSecret(caller, plan.vaultId, secretName, { value, contentType, tags });
      secretUrl = kv.urls.canonical(sb.id ?? '');
    } catch (e) {
      throw kvToArm(e);
    }
    const esc: EncryptionSettingsCollection = {
      enabled: true,
      encryptionSettings: [
        {
          diskEncryptionKey: { sourceVault: { id: plan.vaultId }, secretUrl },
          ...(plan.kek ? { keyEncryptionKey: { sourceVault: { id: plan.kek.vaultId }, keyUrl: plan.kek.url } } : {}),
        },
      ],
      encryptionSettingsVersion: '1.1',
    };
    for (const { disk, os } of g.disks) {
      // The image swap and the disk row (+ the VM's OS-disk settings) commit together (ComputeService.convertDisk).
      await compute.withDiskLock(disk.id, async () => {
        const cur = await compute.requireDisk(disk.id);
        if (cur.format !== 'raw') throw new ArmError(409, 'DiskAlreadyEncrypted', `Disk '${cur.name}' of VM '${vm.name}' is already encrypted.`);
        await compute.convertDisk(cur, { format: 'luks1', passphrase: pass, esc, osOfVm: os ? vm.id : undefined });
      });
    }
  }
  return { message: `Encryption succeeded for ${plan.disks.length} volume(s) (VolumeType ${plan.volumeType}).` };
}
