/**
 * Key Vault data-plane errors: `{"error":{"code","message","innererror":{"code"}}}` (Azure's KeyVaultError).
 * Management-plane (ARM) errors use ArmError from the platform.
 */
import { HttpError } from '../platform/http/errors.js';

export class KeyVaultError extends HttpError {
  override name = 'KeyVaultError';
  constructor(
    status: number,
    code: string,
    message: string,
    readonly innerCode?: string,
    headers?: Record<string, string>,
  ) {
    super(status, code, message, headers);
  }
  toBody(): { error: { code: string; message: string; innererror?: { code: string } } } {
    return { error: { code: this.code, message: this.message, ...(this.innerCode ? { innererror: { code: this.innerCode } } : {}) } };
  }
}

const cap = (s: string) => s[0]!.toUpperCase() + s.slice(1);

export const kvErrors = {
  badParameter: (message: string) => new KeyVaultError(400, 'BadParameter', message),
  notFound: (kind: 'key' | 'secret', name: string, version?: string) =>
    new KeyVaultError(404, kind === 'key' ? 'KeyNotFound' : 'SecretNotFound', version ? `A ${kind} with (name/id) ${name}/${version} was not found in this key vault. If you recently deleted this ${kind} you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182` : `A ${kind} with (name/id) ${name} was not found in this key vault. If you recently deleted this ${kind} you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182`),
  deletedNotFound: (kind: 'key' | 'secret', name: string) => new KeyVaultError(404, kind === 'key' ? 'KeyNotFound' : 'SecretNotFound', `Deleted ${cap(kind)} not found: ${name}`),
  deletedButRecoverable: (kind: 'key' | 'secret', name: string) =>
    new KeyVaultError(409, 'Conflict', `${cap(kind)} ${name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the ${kind} can only be recovered or purged.`, 'ObjectIsDeletedButRecoverable'),
  alreadyExists: (kind: 'key' | 'secret', name: string) => new KeyVaultError(409, 'Conflict', `There is already a ${kind} with the name ${name} in this vault; restore needs a name that is not in use.`, 'ObjectAlreadyExists'),
  badBackup: () => new KeyVaultError(400, 'BadParameter', 'Backup blob contains invalid or corrupt version: cannot decrypt backup blob (it was not produced by this installation, or it was altered).'),
  vaultNotFound: (name: string) => new KeyVaultError(404, 'VaultNotFound', `The key vault '${name}' does not exist (or is deleted). Create it with: rsvault keyvault create -n ${name} -g <group> -l <location>`),
};
