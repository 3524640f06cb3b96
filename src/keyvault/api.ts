/** The public service interface of the Key Vault slice (re-exported by index.ts; documented there). */
import type {
  AccessPolicyEntry,
  DeletedKeyBundle,
  DeletedSecretBundle,
  EncryptionAlgorithm,
  KeyBundle,
  KeyItem,
  SecretBundle,
  SecretItem,
  Vault,
} from './model.js';
import type { VaultUrls } from './urls.js';

/** Who performs a data-plane operation (for HTTP: the token's oid/appid/tid). */
export interface KvPrincipal {
  objectId: string;
  tenantId: string;
  appId?: string | undefined;
}

/** A vault name, vault URI / object URL, or ARM resource id. */
export type VaultRef = string;

export interface DataOptions {
  /** scheme://host[:port] that ids are built on (HTTP: the host the client used). Default: the vault's vaultUri. */
  base?: string | undefined;
}

/** Permission names (Azure's, case-insensitive), e.g. { keys: ['get','list','backup'], secrets: ['get'] }. */
export interface PermissionSet {
  keys?: string[] | undefined;
  secrets?: string[] | undefined;
}

export interface SetSecretInput {
  value: string;
  contentType?: string | undefined;
  tags?: Record<string, string> | undefined;
  attributes?: { enabled?: boolean | undefined; nbf?: number | undefined; exp?: number | undefined } | undefined;
}

export interface CreateKeyInput {
  kty?: 'RSA' | 'RSA-HSM' | undefined;
  keySize?: 2048 | 3072 | 4096 | undefined;
  keyOps?: string[] | undefined;
  tags?: Record<string, string> | undefined;
  attributes?: { enabled?: boolean | undefined; nbf?: number | undefined; exp?: number | undefined } | undefined;
}

export interface KeyOperationResult {
  /** Versioned key id that performed the operation. */
  kid: string;
  value: Buffer;
}

export interface KeyVaultService {
  /** Builds and normalizes every Key Vault URL of this installation (vault URIs, kid/id, ADE settings): urls.ts. */
  readonly urls: VaultUrls;
  // ---- management (no principal: callers are already authorized by ARM RBAC) ----
  /** The active vault with this ARM id (case-insensitive), or undefined (also when soft-deleted). */
  getVault(id: string): Promise<Vault | undefined>;
  /** The active vault with this name (globally unique), or undefined. */
  getVaultByName(name: string): Promise<Vault | undefined>;
  /**
   * Which of `need` the principal lacks on the vault (access policies, or Key Vault RBAC roles when the vault uses
   * RBAC). Empty lists = everything granted. Throws KeyVaultError VaultNotFound when the vault does not exist.
   */
  hasPermissions(vault: VaultRef, objectId: string, need: PermissionSet): Promise<{ keys: string[]; secrets: string[] }>;

  // ---- secrets (as a principal; same checks as the HTTP data plane) ----
  setSecret(as: KvPrincipal, vault: VaultRef, name: string, input: SetSecretInput, o?: DataOptions): Promise<SecretBundle>;
  /** `version` undefined or '' = latest. */
  getSecret(as: KvPrincipal, vault: VaultRef, name: string, version?: string, o?: DataOptions): Promise<SecretBundle>;
  listSecrets(as: KvPrincipal, vault: VaultRef, o?: DataOptions): Promise<SecretItem[]>;
  listSecretVersions(as: KvPrincipal, vault: VaultRef, name: string, o?: DataOptions): Promise<SecretItem[]>;
  deleteSecret(as: KvPrincipal, vault: VaultRef, name: string, o?: DataOptions): Promise<DeletedSecretBundle>;
  /** Opaque blob (base64url text) of every version, sealed to this installation. */
  backupSecret(as: KvPrincipal, vault: VaultRef, name: string): Promise<string>;
  /** Restores all versions with their version ids. 409 if the name exists (live or soft-deleted); 400 for a bad blob. */
  restoreSecret(as: KvPrincipal, vault: VaultRef, blob: string, o?: DataOptions): Promise<SecretBundle>;

  // ---- keys ----
  createKey(as: KvPrincipal, vault: VaultRef, name: string, input?: CreateKeyInput, o?: DataOptions): Promise<KeyBundle>;
  getKey(as: KvPrincipal, vault: VaultRef, name: string, version?: string, o?: DataOptions): Promise<KeyBundle>;
  listKeys(as: KvPrincipal, vault: VaultRef, o?: DataOptions): Promise<KeyItem[]>;
  deleteKey(as: KvPrincipal, vault: VaultRef, name: string, o?: DataOptions): Promise<DeletedKeyBundle>;
  backupKey(as: KvPrincipal, vault: VaultRef, name: string): Promise<string>;
  restoreKey(as: KvPrincipal, vault: VaultRef, blob: string, o?: DataOptions): Promise<KeyBundle>;
  /** RSA wrap (RSA-OAEP = SHA-1, RSA-OAEP-256, RSA1_5) of raw bytes with the key version ('' = latest). */
  wrapKey(as: KvPrincipal, vault: VaultRef, name: string, version: string | undefined, alg: EncryptionAlgorithm, value: Buffer, o?: DataOptions): Promise<KeyOperationResult>;
  unwrapKey(as: KvPrincipal, vault: VaultRef, name: string, version: string | undefined, alg: EncryptionAlgorithm, value: Buffer, o?: DataOptions): Promise<KeyOperationResult>;
}

/** Formats a missing-permission result as Azure does in messages: `keys backup, secrets get`. */
export function formatMissing(m: { keys: string[]; secrets: string[] }): string {
  return [...m.keys.map((p) => `keys ${p}`), ...m.secrets.map((p) => `secrets ${p}`)].join(', ');
}

// Re-exported for callers that set up policies programmatically (e.g. tests, bootstrap).
export type AccessPolicyList = AccessPolicyEntry[];
