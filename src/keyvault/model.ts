/**
 * Key Vault: types and pure rules — vault names, permission names, access-policy arithmetic, templates,
 * recovery levels, Key Vault RBAC data actions, lenient base64, version ids. No I/O here.
 */
import { randomBytes } from 'node:crypto';

// ---- permissions ------------------------------------------------------------------------------------------------

export const KEY_PERMISSIONS = [
  'encrypt', 'decrypt', 'wrapKey', 'unwrapKey', 'sign', 'verify', 'get', 'list', 'create', 'update', 'import',
  'delete', 'backup', 'restore', 'recover', 'purge', 'release', 'rotate', 'getrotationpolicy', 'setrotationpolicy',
] as const;
export const SECRET_PERMISSIONS = ['get', 'list', 'set', 'delete', 'backup', 'restore', 'recover', 'purge'] as const;
export const CERTIFICATE_PERMISSIONS = [
  'get', 'list', 'delete', 'create', 'import', 'update', 'managecontacts', 'getissuers', 'listissuers', 'setissuers',
  'deleteissuers', 'manageissuers', 'recover', 'purge', 'backup', 'restore',
] as const;
export const STORAGE_PERMISSIONS = ['get', 'list', 'delete', 'set', 'update', 'regeneratekey', 'recover', 'purge', 'backup', 'restore', 'setsas', 'listsas', 'getsas', 'deletesas'] as const;

export type KeyPermission = (typeof KEY_PERMISSIONS)[number];
export type SecretPermission = (typeof SECRET_PERMISSIONS)[number];
export type PermissionKind = 'keys' | 'secrets' | 'certificates' | 'storage';

export const PERMISSION_NAMES: Record<PermissionKind, readonly string[]> = {
  keys: KEY_PERMISSIONS,
  secrets: SECRET_PERMISSIONS,
  certificates: CERTIFICATE_PERMISSIONS,
  storage: STORAGE_PERMISSIONS,
};

export interface Permissions {
  keys?: string[] | undefined;
  secrets?: string[] | undefined;
  certificates?: string[] | undefined;
  storage?: string[] | undefined;
}

export interface AccessPolicyEntry {
  tenantId: string;
  objectId: string;
  applicationId?: string | undefined;
  permissions: Permissions;
}

/** Canonical spelling of a permission name (case-insensitive input, as portal/PowerShell send `Get`, `WrapKey`). */
export function canonicalPermission(kind: PermissionKind, p: string): string | undefined {
  if (p.toLowerCase() === 'all') return 'all';
  return PERMISSION_NAMES[kind].find((x) => x.toLowerCase() === p.toLowerCase());
}

/** The first unknown permission in `perms`, as `keys/foo`, or undefined. */
export function unknownPermission(perms: Permissions): string | undefined {
  for (const kind of Object.keys(PERMISSION_NAMES) as PermissionKind[]) {
    for (const p of perms[kind] ?? []) if (!canonicalPermission(kind, p)) return `${kind}/${p}`;
  }
  return undefined;
}

function normList(kind: PermissionKind, list: string[] | undefined): string[] {
  const out: string[] = [];
  for (const p of list ?? []) {
    const c = canonicalPermission(kind, p) ?? p;
    if (!out.some((x) => x.toLowerCase() === c.toLowerCase())) out.push(c);
  }
  return out;
}

export function normPermissions(p: Permissions): Required<Permissions> {
  return { keys: normList('keys', p.keys), secrets: normList('secrets', p.secrets), certificates: normList('certificates', p.certificates), storage: normList('storage', p.storage) };
}

export function normPolicy(e: AccessPolicyEntry): AccessPolicyEntry {
  return {
    tenantId: e.tenantId,
    objectId: e.objectId,
    ...(e.applicationId ? { applicationId: e.applicationId } : {}),
    permissions: normPermissions(e.permissions),
  };
}

const samePrincipal = (a: AccessPolicyEntry, b: AccessPolicyEntry) =>
  a.objectId.toLowerCase() === b.objectId.toLowerCase() &&
  a.tenantId.toLowerCase() === b.tenantId.toLowerCase() &&
  (a.applicationId ?? '').toLowerCase() === (b.applicationId ?? '').toLowerCase();

const KINDS: PermissionKind[] = ['keys', 'secrets', 'certificates', 'storage'];
const isEmpty = (p: Permissions) => KINDS.every((k) => (p[k] ?? []).length === 0);

/**
 * `accessPolicies/{add|replace|remove}`: add = union into the entry of the same (tenant, object, application) or
 * append; replace = set that entry's permissions (append if absent); remove = subtract, dropping empty entries.
 */
export function applyPolicyChange(current: AccessPolicyEntry[], kind: 'add' | 'replace' | 'remove', changes: AccessPolicyEntry[]): AccessPolicyEntry[] {
  let list = current.map(normPolicy);
  for (const raw of changes) {
    const ch = normPolicy(raw);
    const i = list.findIndex((e) => samePrincipal(e, ch));
    if (kind === 'add') {
      if (i < 0) list.push(ch);
      else {
        const e = list[i]!;
        const merged: Permissions = {};
        for (const k of KINDS) merged[k] = normList(k, [...(e.permissions[k] ?? []), ...(ch.permissions[k] ?? [])]);
        list[i] = { ...e, permissions: merged };
      }
    } else if (kind === 'replace') {
      if (i < 0) list.push(ch);
      else list[i] = { ...list[i]!, permissions: ch.permissions };
    } else if (i >= 0) {
      const e = list[i]!;
      const left: Permissions = {};
      for (const k of KINDS) {
        const drop = new Set((ch.permissions[k] ?? []).map((x) => x.toLowerCase()));
        // Azure semantics: removing an entry with no permissions listed removes the whole entry.
        left[k] = isEmpty(ch.permissions) ? [] : (e.permissions[k] ?? []).filter((x) => !drop.has(x.toLowerCase()));
      }
      if (isEmpty(left)) list = list.filter((_, j) => j !== i);
      else list[i] = { ...e, permissions: left };
    }
  }
  return list;
}

/** Does the policy list grant `kind/perm` to the principal? (`all` grants every permission of its kind.) */
export function policyGrants(policies: AccessPolicyEntry[], who: { objectId: string; appId?: string | undefined }, kind: PermissionKind, perm: string): boolean {
  const oid = who.objectId.toLowerCase();
  return policies.some(
    (e) =>
      e.objectId.toLowerCase() === oid &&
      (!e.applicationId || e.applicationId.toLowerCase() === (who.appId ?? '').toLowerCase()) &&
      (e.permissions[kind] ?? []).some((p) => p.toLowerCase() === 'all' || p.toLowerCase() === perm.toLowerCase()),
  );
}

// ---- templates ----------------------------------------------------------------------------------------------------

export interface AccessPolicyTemplate {
  name: string;
  description: string;
  permissions: Required<Permissions>;
}

/** The portal's "Configure from template" list (rsvault serves it at GET /providers/Microsoft.KeyVault/accessPolicyTemplates). */
export const ACCESS_POLICY_TEMPLATES: readonly AccessPolicyTemplate[] = [
  {
    name: 'Azure Backup',
    description: 'What the Backup Management Service needs to back up encrypted VMs: read and back up keys (KEK) and secrets (BEK). No unwrap or decrypt.',
    permissions: { keys: ['get', 'list', 'backup'], secrets: ['get', 'list', 'backup'], certificates: [], storage: [] },
  },
  {
    name: 'Key, Secret, & Certificate Management',
    description: 'Full management of keys, secrets and certificates (no cryptographic operations).',
    permissions: {
      keys: ['get', 'list', 'update', 'create', 'import', 'delete', 'recover', 'backup', 'restore'],
      secrets: ['get', 'list', 'set', 'delete', 'recover', 'backup', 'restore'],
      certificates: ['get', 'list', 'update', 'create', 'import', 'delete', 'recover', 'backup', 'restore', 'managecontacts', 'manageissuers', 'getissuers', 'listissuers', 'setissuers', 'deleteissuers'],
      storage: [],
    },
  },
  {
    name: 'Key & Secret Management',
    description: 'Full management of keys and secrets (no cryptographic operations).',
    permissions: {
      keys: ['get', 'list', 'update', 'create', 'import', 'delete', 'recover', 'backup', 'restore'],
      secrets: ['get', 'list', 'set', 'delete', 'recover', 'backup', 'restore'],
      certificates: [],
      storage: [],
    },
  },
  {
    name: 'Secret Management',
    description: 'Manage secrets: get, list, set, delete, recover, backup, restore.',
    permissions: { keys: [], secrets: ['get', 'list', 'set', 'delete', 'recover', 'backup', 'restore'], certificates: [], storage: [] },
  },
  {
    name: 'Key Management',
    description: 'Manage keys: get, list, update, create, import, delete, recover, backup, restore.',
    permissions: { keys: ['get', 'list', 'update', 'create', 'import', 'delete', 'recover', 'backup', 'restore'], secrets: [], certificates: [], storage: [] },
  },
  {
    name: 'Azure Disk Encryption',
    description: 'What Azure Disk Encryption needs: keys get, wrapKey, unwrapKey; secrets get, set.',
    permissions: { keys: ['get', 'wrapKey', 'unwrapKey'], secrets: ['get', 'set'], certificates: [], storage: [] },
  },
];

export function findTemplate(name: string): AccessPolicyTemplate | undefined {
  const k = name.trim().toLowerCase();
  return ACCESS_POLICY_TEMPLATES.find((t) => t.name.toLowerCase() === k);
}

// ---- RBAC (enableRbacAuthorization) ------------------------------------------------------------------------------

/** The data action Azure names for a data-plane permission. */
export function dataActionOf(kind: 'keys' | 'secrets', perm: string): string {
  const p = perm.toLowerCase();
  const base = `Microsoft.KeyVault/vaults/${kind}`;
  if (kind === 'secrets') {
    const m: Record<string, string> = {
      get: 'secrets/getSecret/action',
      list: 'secrets/readMetadata/action',
      set: 'secrets/setSecret/action',
      delete: 'secrets/delete',
      backup: 'secrets/backup/action',
      restore: 'secrets/restore/action',
      recover: 'secrets/recover/action',
      purge: 'secrets/purge/action',
    };
    return `Microsoft.KeyVault/vaults/${m[p] ?? `secrets/${perm}/action`}`;
  }
  const m: Record<string, string> = {
    get: 'keys/read',
    list: 'keys/read',
    create: 'keys/create/action',
    import: 'keys/import/action',
    update: 'keys/write',
    delete: 'keys/delete',
    backup: 'keys/backup/action',
    restore: 'keys/restore/action',
    recover: 'keys/recover/action',
    purge: 'keys/purge/action',
    encrypt: 'keys/encrypt/action',
    decrypt: 'keys/decrypt/action',
    wrapkey: 'keys/wrap/action',
    unwrapkey: 'keys/unwrap/action',
    sign: 'keys/sign/action',
    verify: 'keys/verify/action',
    release: 'keys/release/action',
    rotate: 'keys/rotate/action',
  };
  return m[p] ? `Microsoft.KeyVault/vaults/${m[p]}` : `${base}/${perm}/action`;
}

/** Azure action patterns: case-insensitive, `*` matches any run of characters. */
export function actionMatches(pattern: string, action: string): boolean {
  const re = new RegExp('^' + pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\/]/g, '\\$&')).join('.*') + '$', 'i');
  return re.test(action);
}

// ---- names, versions, encodings -------------------------------------------------------------------------------------

/** Vault names: 3-24 characters, letters, digits and hyphens, starting with a letter, ending with a letter or digit, no "--". */
export function vaultNameError(name: string): string | undefined {
  if (name.length < 3 || name.length > 24) return 'the name must be 3-24 characters long.';
  if (!/^[a-zA-Z][a-zA-Z0-9-]*[a-zA-Z0-9]$/.test(name)) return 'the name may contain only letters, digits and hyphens, must start with a letter and end with a letter or digit.';
  if (name.includes('--')) return 'the name must not contain consecutive hyphens.';
  return undefined;
}

/** Key and secret names: 1-127 characters, `^[0-9a-zA-Z-]+$`. */
export const OBJECT_NAME = /^[0-9a-zA-Z-]{1,127}$/;

export const newVersion = (): string => randomBytes(16).toString('hex');
export const VERSION_RE = /^[0-9a-f]{32}$/i;

/** Lenient base64: accepts base64url and standard base64, with or without padding; undefined when malformed. */
export function decodeB64(s: string): Buffer | undefined {
  const t = s.trim().replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(t)) return undefined;
  const std = t.replace(/-/g, '+').replace(/_/g, '/').replace(/=+$/, '');
  if (std.length % 4 === 1) return undefined;
  return Buffer.from(std, 'base64');
}

export const b64url = (b: Buffer | Uint8Array): string => Buffer.from(b).toString('base64url');

/** Accepts `true`/`false` and the strings ADE scripts send ("true"). */
export function lenientBool(v: unknown): boolean | undefined {
  if (typeof v === 'boolean') return v;
  if (typeof v === 'string' && /^(true|false)$/i.test(v)) return v.toLowerCase() === 'true';
  return undefined;
}

// ---- recovery levels ------------------------------------------------------------------------------------------------

export function recoveryLevelOf(v: { enableSoftDelete: boolean; softDeleteRetentionInDays: number; enablePurgeProtection: boolean }): string {
  if (!v.enableSoftDelete) return 'Purgeable';
  const custom = v.softDeleteRetentionInDays < 90 ? 'CustomizedRecoverable' : 'Recoverable';
  return v.enablePurgeProtection ? custom : `${custom}+Purgeable`;
}

// ---- vault ----------------------------------------------------------------------------------------------------------

export interface Vault {
  /** ARM id: /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name} */
  id: string;
  name: string;
  subscriptionId: string;
  resourceGroup: string;
  location: string;
  tags: Record<string, string>;
  tenantId: string;
  sku: { family: string; name: string };
  accessPolicies: AccessPolicyEntry[];
  /** https://{name}.vault.localhost:{port}/ */
  vaultUri: string;
  enabledForDeployment: boolean;
  enabledForDiskEncryption: boolean;
  enabledForTemplateDeployment: boolean;
  enableSoftDelete: boolean;
  softDeleteRetentionInDays: number;
  enablePurgeProtection: boolean;
  enableRbacAuthorization: boolean;
  publicNetworkAccess: string;
  networkAcls?: unknown;
  state: 'Active' | 'Deleted';
  createdAt: number;
  updatedAt: number;
  deletedAt?: number | undefined;
  scheduledPurgeAt?: number | undefined;
}

export const VAULT_TYPE = 'Microsoft.KeyVault/vaults';

export function vaultArmId(sub: string, rg: string, name: string): string {
  return `/subscriptions/${sub}/resourceGroups/${rg}/providers/${VAULT_TYPE}/${name}`;
}

// ---- wire shapes (data plane) ---------------------------------------------------------------------------------------

export interface ObjectAttributes {
  enabled: boolean;
  nbf?: number;
  exp?: number;
  created: number;
  updated: number;
  recoveryLevel: string;
  recoverableDays: number;
  exportable?: boolean;
}

export interface JsonWebKey {
  kid: string;
  kty: string;
  key_ops: string[];
  n: string;
  e: string;
}

export interface KeyBundle {
  key: JsonWebKey;
  attributes: ObjectAttributes;
  tags?: Record<string, string>;
}

export interface DeletedKeyBundle extends KeyBundle {
  recoveryId?: string;
  deletedDate?: number;
  scheduledPurgeDate?: number;
}

export interface KeyItem {
  kid: string;
  attributes: ObjectAttributes;
  tags?: Record<string, string>;
}

export interface SecretBundle {
  id: string;
  value: string;
  contentType?: string;
  attributes: ObjectAttributes;
  tags?: Record<string, string>;
}

export interface DeletedSecretBundle extends Omit<SecretBundle, 'value'> {
  recoveryId?: string;
  deletedDate?: number;
  scheduledPurgeDate?: number;
}

export interface SecretItem {
  id: string;
  contentType?: string;
  attributes: ObjectAttributes;
  tags?: Record<string, string>;
}

export const KEY_OPS = ['encrypt', 'decrypt', 'sign', 'verify', 'wrapKey', 'unwrapKey'] as const;
export const ENCRYPTION_ALGORITHMS = ['RSA-OAEP', 'RSA-OAEP-256', 'RSA1_5'] as const;
export type EncryptionAlgorithm = (typeof ENCRYPTION_ALGORITHMS)[number];
export const SIGNATURE_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'] as const;

/** Parses `https://{vault}.{suffix}[:port]/{keys|secrets}/{name}[/{version}]`. */
export function parseObjectUrl(url: string): { vaultName: string; host: string; collection: string; name: string; version?: string | undefined } | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return undefined;
  }
  const parts = u.pathname.split('/').filter(Boolean);
  if (parts.length < 2 || parts.length > 3) return undefined;
  const vaultName = u.hostname.split('.')[0]!.toLowerCase();
  return { vaultName, host: u.host, collection: parts[0]!.toLowerCase(), name: parts[1]!, version: parts[2] || undefined };
}

/**
 * The Azure Disk Encryption platform principal: what compute acts as when it opens an encrypted disk at VM start or
 * disk attach (get the BEK secret, unwrap it with the KEK). It holds no access policy or role: a vault grants it
 * secrets get and keys get + unwrapKey exactly while `enabledForDiskEncryption` is true, as Azure's platform access
 * ("Azure Disk Encryption for volume encryption") does. It is NOT the Backup Management Service, which never gets
 * unwrapKey. Its calls go through the same data-plane path and audit log as every other caller.
 */
export const DISK_ENCRYPTION_PLATFORM = Object.freeze({ objectId: 'ade0e5c0-d15c-4e0c-8000-00000000c0de', appId: 'ade0e5c0-d15c-4e0c-8000-00000000c0de', tenantId: 'platform' });

/** What `enabledForDiskEncryption` lets the platform principal do. */
export function diskEncryptionPlatformGrants(vault: { enabledForDiskEncryption?: boolean | undefined }, kind: PermissionKind, perm: string): boolean {
  if (!vault.enabledForDiskEncryption) return false;
  const p = perm.toLowerCase();
  return kind === 'secrets' ? p === 'get' : p === 'get' || p === 'unwrapkey';
}
