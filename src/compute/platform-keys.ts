/**
 * The platform side of Azure Disk Encryption: opening an encrypted disk when its VM starts (or is created running, or
 * the disk is attached to a running VM), with the BEK/KEK its encryption settings name, as Azure's compute platform
 * does with its own access — not the caller's, and never the Backup Management Service's.
 */
import { ArmError } from '../platform/http/errors.js';
import { DISK_ENCRYPTION_PLATFORM, KeyVaultError, type EncryptionAlgorithm, type KeyVaultService } from '../keyvault/index.js';
import { LuksError } from '../engine/index.js';
import { unlockImage } from './disk-io.js';
import type { Disk, VmDiskEncryptionSettings } from './model.js';

/** A Key Vault error as an ARM error (403 → KeyVaultAccessDenied). */
export function kvToArm(e: unknown): unknown {
  if (e instanceof KeyVaultError) {
    const status = e.status === 403 ? 403 : e.status === 404 ? 404 : 400;
    return new ArmError(status, e.status === 403 ? 'KeyVaultAccessDenied' : e.code, `Key Vault: ${e.message}`);
  }
  return e;
}

/** The ADE references of one disk: its encryptionSettingsCollection, else (OS disk) the VM's osDisk.encryptionSettings. */
export interface AdeRefs {
  secretUrl: string;
  secretVaultId?: string | undefined;
  keyUrl?: string | undefined;
  kekVaultId?: string | undefined;
}

export function adeRefsOf(disk: Disk, vmOsSettings?: VmDiskEncryptionSettings): AdeRefs | undefined {
  const s = disk.encryptionSettingsCollection?.enabled ? disk.encryptionSettingsCollection.encryptionSettings[0] : undefined;
  if (s?.diskEncryptionKey?.secretUrl) return { secretUrl: s.diskEncryptionKey.secretUrl, secretVaultId: s.diskEncryptionKey.sourceVault?.id, keyUrl: s.keyEncryptionKey?.keyUrl, kekVaultId: s.keyEncryptionKey?.sourceVault?.id };
  const v = vmOsSettings && vmOsSettings.enabled !== false ? vmOsSettings : undefined;
  if (v?.diskEncryptionKey?.secretUrl) return { secretUrl: v.diskEncryptionKey.secretUrl, secretVaultId: v.diskEncryptionKey.sourceVault?.id, keyUrl: v.keyEncryptionKey?.keyUrl, kekVaultId: v.keyEncryptionKey?.sourceVault?.id };
  return undefined;
}

const adeErr = (status: number, code: string, msg: string, rec: string) => new ArmError(status, code, msg, { recommendation: rec });

/**
 * The LUKS volume key of an encrypted disk, as the Azure platform gets it when a VM starts: the BEK secret named by
 * the disk's encryption settings is read and (with a KEK) unwrapped through the normal Key Vault path AS the disk
 * encryption platform principal (DISK_ENCRYPTION_PLATFORM), which a vault admits only while it is
 * `enabledForDiskEncryption` — not as the caller, and never as the Backup Management Service. Failures are ADE-style
 * ArmErrors naming the vault, key or secret and the command that fixes it.
 */
export async function platformVolumeKey(kv: KeyVaultService | undefined, disk: Disk, refs: AdeRefs, vmName: string): Promise<Buffer> {
  if (!kv) throw new ArmError(503, 'KeyVaultUnavailable', 'The Key Vault service is not available in this server.');
  const so = kv.urls.parse(refs.secretUrl);
  if (!so || so.collection !== 'secrets') throw adeErr(400, 'InvalidEncryptionSettings', `Disk '${disk.name}' names '${refs.secretUrl}' as its disk encryption key, which is not a Key Vault secret URL.`, 'Set the disk encryption settings to the BEK secret URL (https://{vault}.../secrets/{name}/{version}).');
  const vaultOf = async (id: string | undefined, name: string, what: string) => {
    const v = (id && id.startsWith('/') ? await kv.getVault(id) : undefined) ?? (await kv.getVaultByName(name));
    if (!v) {
      throw adeErr(400, 'KeyVaultNotFound', `The key vault '${id ?? name}' holding the ${what} of disk '${disk.name}' (VM '${vmName}') does not exist; the disk cannot be opened.`, `Recreate the vault and restore the key and secret: rsvault backup restore restore-keys … --target-key-vault ${name}, then point the disk's encryption settings at the restored URLs.`);
    }
    if (!v.enabledForDiskEncryption) {
      throw adeErr(400, 'KeyVaultNotEnabledForDiskEncryption', `The key vault '${v.name}' holding the ${what} of disk '${disk.name}' (VM '${vmName}') is not enabled for disk encryption, so the platform may not read it; the disk cannot be opened.`, `Enable it: rsvault keyvault update -n ${v.name} -g ${v.resourceGroup} --enabled-for-disk-encryption true`);
    }
    return v;
  };
  const vault = await vaultOf(refs.secretVaultId, so.vaultName, 'disk encryption key (BEK)');
  let secret;
  try {
    secret = await kv.getSecret(DISK_ENCRYPTION_PLATFORM, vault.id, so.name, so.version);
  } catch (e) {
    if (e instanceof KeyVaultError && e.status === 404) throw adeErr(400, 'KeyVaultSecretDoesNotExist', `The disk encryption key (BEK) secret '${refs.secretUrl}' of disk '${disk.name}' (VM '${vmName}') does not exist in vault '${vault.name}'; the disk cannot be opened.`, `Restore it (rsvault backup restore restore-keys … --target-key-vault ${vault.name}) or recover it (az keyvault secret recover), then start the VM again.`);
    throw kvToArm(e);
  }
  const kekUrl = refs.keyUrl ?? (secret.contentType === 'Wrapped BEK' ? secret.tags?.DiskEncryptionKeyEncryptionKeyURL : undefined);
  let pass: Buffer;
  if (kekUrl) {
    const ko = kv.urls.parse(kekUrl);
    if (!ko || ko.collection !== 'keys') throw adeErr(400, 'InvalidEncryptionSettings', `Disk '${disk.name}' names '${kekUrl}' as its key encryption key, which is not a Key Vault key URL.`, 'Set the key encryption key URL to https://{vault}.../keys/{name}/{version}.');
    const kekVault = await vaultOf(refs.kekVaultId, ko.vaultName, 'key encryption key (KEK)');
    const alg = (secret.tags?.DiskEncryptionKeyEncryptionAlgorithm ?? 'RSA-OAEP') as EncryptionAlgorithm;
    try {
      pass = (await kv.unwrapKey(DISK_ENCRYPTION_PLATFORM, kekVault.id, ko.name, ko.version, alg, Buffer.from(secret.value ?? '', 'base64url'))).value;
    } catch (e) {
      if (e instanceof KeyVaultError && e.status === 404) throw adeErr(400, 'KeyVaultKeyDoesNotExist', `The key encryption key '${kekUrl}' of disk '${disk.name}' (VM '${vmName}') does not exist in vault '${kekVault.name}'; the disk cannot be opened.`, `Restore it (rsvault backup restore restore-keys … --target-key-vault ${kekVault.name}), then start the VM again.`);
      if (e instanceof KeyVaultError && e.status === 400) throw adeErr(400, 'DiskEncryptionKeyInvalid', `The BEK secret '${refs.secretUrl}' of disk '${disk.name}' does not unwrap with the key encryption key '${kekUrl}' (${e.message}).`, 'Point the disk at the KEK that wrapped this secret (the secret\'s DiskEncryptionKeyEncryptionKeyURL tag).');
      throw kvToArm(e);
    }
  } else {
    pass = Buffer.from(secret.value ?? '', 'base64');
  }
  try {
    return (await unlockImage(disk.imagePath, pass)).masterKey;
  } catch (e) {
    if (e instanceof LuksError && e.kind === 'BadPassphrase') throw adeErr(400, 'DiskEncryptionKeyInvalid', `The disk encryption key '${refs.secretUrl}' does not open disk '${disk.name}' (no LUKS key slot accepts it).`, 'Point the disk\'s encryption settings at the BEK secret (and KEK) it was encrypted with.');
    if (e instanceof LuksError) throw new ArmError(400, 'UnsupportedDiskFormat', `Disk '${disk.name}': ${e.message}`);
    throw e;
  }
}
