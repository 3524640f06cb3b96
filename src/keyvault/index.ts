/**
 * Key Vault slice — the ONLY file other slices import.
 *
 * `KeyVaultService` is what compute (Azure Disk Encryption) and recovery (Azure Backup) use. Every data-plane method
 * acts AS a principal (`KvPrincipal`) and goes through exactly the same access-policy (or RBAC) checks, audit log
 * and soft-delete rules as the HTTP data plane: the Backup Management Service gets 403 `Forbidden` for unwrapKey just
 * like any external caller. Errors are `KeyVaultError` (status, `code`, `innerCode`), the same codes the wire uses:
 * `VaultNotFound` 404, `KeyNotFound`/`SecretNotFound` 404, `Forbidden` 403, `Conflict` 409
 * (innerCode `ObjectIsDeletedButRecoverable`), `BadParameter` 400.
 *
 * A `VaultRef` is a vault name (`kv1`), its vault URI or any object URL on it (`https://kv1.vault.localhost:8443/...`),
 * or its ARM id (`/subscriptions/…/providers/Microsoft.KeyVault/vaults/kv1`). Returned bundles have the wire shape of
 * the data plane (ids on `o.base` when given, else on the vault's `vaultUri` host, e.g.
 * `https://kv1.vault.localhost:8443/secrets/{name}/{version}`). Binary values (wrap/unwrap) are Buffers.
 */
export type {
  AccessPolicyEntry,
  AccessPolicyTemplate,
  DeletedKeyBundle,
  DeletedSecretBundle,
  EncryptionAlgorithm,
  JsonWebKey,
  KeyBundle,
  KeyItem,
  ObjectAttributes,
  Permissions,
  SecretBundle,
  SecretItem,
  Vault,
} from './model.js';
export { ACCESS_POLICY_TEMPLATES, DISK_ENCRYPTION_PLATFORM, findTemplate, parseObjectUrl, VAULT_TYPE } from './model.js';
export { VaultUrls, type VaultUrlOptions, type VaultObjectRef } from './urls.js';
export { KeyVaultError } from './errors.js';
export { KeyVaultServiceImpl, type KeyVaultDeps } from './service.js';
export { keyvaultMigrations, KeyVaultStore } from './store.js';
export { registerKeyVaultRoutes } from './routes.js';
export { registerKeyVaultDataRoutes, keyVaultChallenge } from './data-routes.js';

export type {
  KvPrincipal,
  VaultRef,
  DataOptions,
  PermissionSet,
  SetSecretInput,
  CreateKeyInput,
  KeyOperationResult,
  KeyVaultService,
  AccessPolicyList,
} from './api.js';
export { formatMissing } from './api.js';
