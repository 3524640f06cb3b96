/**
 * Key Vault use cases: vaults (management plane) and keys/secrets (data plane). Every data-plane operation resolves
 * the vault, authorizes the principal (access policies, or Key Vault RBAC roles), runs, and writes one audit row
 * (principal, operation, object, result — never a value). HTTP routes and other slices call the same methods.
 */
import type { KeyObject } from 'node:crypto';
import { ArmError, armErrors } from '../platform/http/errors.js';
import type { Sealer } from '../platform/crypto.js';
import type { Logger } from '../platform/log.js';
import { findRole, type IdentityService } from '../identity/index.js';
import type { ResourceService } from '../resources/index.js';
import type { CreateKeyInput, DataOptions, KeyOperationResult, KeyVaultService, KvPrincipal, PermissionSet, SetSecretInput, VaultRef } from './api.js';
import { KeyVaultError, kvErrors } from './errors.js';
import type { VaultUrls } from './urls.js';
import { CryptoInputError, exportRsa, generateRsa, importRsaJwk, privateKeyOf, publicKeyOf, rsaDecrypt, rsaEncrypt, rsaSign, rsaVerify } from './crypto.js';
import {
  actionMatches,
  applyPolicyChange,
  b64url,
  dataActionOf,
  decodeB64,
  DISK_ENCRYPTION_PLATFORM,
  diskEncryptionPlatformGrants,
  ENCRYPTION_ALGORITHMS,
  KEY_OPS,
  newVersion,
  normPolicy,
  OBJECT_NAME,
  policyGrants,
  recoveryLevelOf,
  unknownPermission,
  vaultArmId,
  vaultNameError,
  VAULT_TYPE,
  type AccessPolicyEntry,
  type DeletedKeyBundle,
  type DeletedSecretBundle,
  type EncryptionAlgorithm,
  type KeyBundle,
  type KeyItem,
  type ObjectAttributes,
  type SecretBundle,
  type SecretItem,
  type Vault,
} from './model.js';
import { objectIdOf, type KeyVaultStore, type ObjectRow, type VaultRow, type VersionRow } from './store.js';

export interface KeyVaultDeps {
  store: KeyVaultStore;
  sealer: Sealer;
  resources: ResourceService;
  identity: IdentityService;
  /** Builds every vault URI and object URL (host suffix + public port): see urls.ts. */
  urls: VaultUrls;
  /** Token issuer for a tenant (named in 403 messages, as Azure does). */
  issuer: (tenantId: string) => string;
  log?: Logger | undefined;
}

/** Body of a vault PUT (ARM). */
export interface VaultInput {
  location: string;
  tags?: Record<string, string> | undefined;
  properties: {
    tenantId?: string | undefined;
    sku?: { family?: string | undefined; name: string } | undefined;
    accessPolicies?: AccessPolicyEntry[] | undefined;
    enabledForDeployment?: boolean | undefined;
    enabledForDiskEncryption?: boolean | undefined;
    enabledForTemplateDeployment?: boolean | undefined;
    enableSoftDelete?: boolean | undefined;
    softDeleteRetentionInDays?: number | undefined;
    enablePurgeProtection?: boolean | undefined;
    enableRbacAuthorization?: boolean | undefined;
    createMode?: string | undefined;
    networkAcls?: unknown;
    publicNetworkAccess?: string | undefined;
    vaultUri?: string | undefined;
    provisioningState?: string | undefined;
  };
}
export type VaultPatch = { tags?: Record<string, string> | undefined; properties?: Partial<VaultInput['properties']> | undefined };

type Props = Omit<Vault, 'id' | 'name' | 'subscriptionId' | 'resourceGroup' | 'location' | 'tags' | 'vaultUri' | 'state' | 'createdAt' | 'updatedAt' | 'deletedAt' | 'scheduledPurgeAt'>;

type Kind = 'key' | 'secret';
const COLL: Record<Kind, 'keys' | 'secrets'> = { key: 'keys', secret: 'secrets' };
const DAY = 86_400_000;
const sec = (ms: number) => Math.floor(ms / 1000);
const MAX_SECRET_BYTES = 25 * 1024;
const BACKUP_PREFIX = 'rsvault-kv-backup-v1:';

interface StoredAttrs {
  enabled: boolean;
  nbf?: number | undefined;
  exp?: number | undefined;
}
interface KeyMeta {
  kty: string;
  key_ops: string[];
  n: string;
  e: string;
}
interface SecretMeta {
  contentType?: string | undefined;
}

export interface AuditEvent {
  id: number;
  time: string;
  vaultName: string;
  callerObjectId: string;
  callerAppId?: string | undefined;
  operationName: string;
  object?: string | undefined;
  httpStatusCode: number;
  resultType: string;
}

export class KeyVaultServiceImpl implements KeyVaultService {
  constructor(private readonly d: KeyVaultDeps) {}

  // =================================================================================================================
  // Management plane
  // =================================================================================================================

  get urls(): VaultUrls {
    return this.d.urls;
  }

  vaultUriOf(name: string): string {
    return this.d.urls.vaultUri(name);
  }

  private toVault(r: VaultRow): Vault {
    const p = JSON.parse(r.props_json) as Props;
    return {
      id: r.id,
      name: r.name,
      subscriptionId: r.subscription_id,
      resourceGroup: r.resource_group,
      location: r.location,
      tags: JSON.parse(r.tags_json) as Record<string, string>,
      ...p,
      vaultUri: this.vaultUriOf(r.name),
      state: r.state === 'Deleted' ? 'Deleted' : 'Active',
      createdAt: r.created_at,
      updatedAt: r.updated_at,
      deletedAt: r.deleted_at ?? undefined,
      scheduledPurgeAt: r.purge_at ?? undefined,
    };
  }

  async getVault(id: string): Promise<Vault | undefined> {
    const r = await this.d.store.vaultById(id);
    return r && r.state === 'Active' ? this.toVault(r) : undefined;
  }

  async getVaultByName(name: string): Promise<Vault | undefined> {
    const r = await this.d.store.vaultByName(name);
    return r && r.state === 'Active' ? this.toVault(r) : undefined;
  }

  /** The active vault in this group, or ARM ResourceNotFound. */
  async requireVault(sub: string, rg: string, name: string): Promise<Vault> {
    await this.d.resources.requireGroup(sub, rg);
    const v = await this.getVault(vaultArmId(sub, rg, name));
    if (!v) throw armErrors.notFound(VAULT_TYPE, name, rg);
    return v;
  }

  async listVaults(sub: string, rg?: string): Promise<Vault[]> {
    this.d.resources.requireSubscription(sub);
    if (rg) await this.d.resources.requireGroup(sub, rg);
    let q = this.d.store.db.selectFrom('keyvault_vaults').selectAll().where('subscription_id', '=', sub).where('state', '=', 'Active');
    if (rg) q = q.where('resource_group', '=', rg.toLowerCase());
    return (await q.orderBy('name_norm').execute()).map((r) => this.toVault(r));
  }

  private validatePolicies(list: AccessPolicyEntry[], tenantId: string): AccessPolicyEntry[] {
    if (list.length > 1024) throw armErrors.invalidContent('A vault can have at most 1024 access policies.', 'properties.accessPolicies');
    return list.map((raw, i) => {
      const e = { ...raw, tenantId: raw.tenantId || tenantId };
      if (!e.objectId) throw armErrors.invalidContent(`The access policy at index ${i} has no objectId.`, `properties.accessPolicies[${i}].objectId`);
      const bad = unknownPermission(e.permissions ?? {});
      if (bad) {
        throw new ArmError(400, 'BadRequest', `Invalid value found at accessPolicies[${i}].permissions.${bad.replace('/', '[...]: ')}. Valid names are listed in 'rsvault keyvault set-policy --help'.`, {
          target: `properties.accessPolicies[${i}].permissions`,
          recommendation: 'Use Azure permission names, e.g. keys: get list backup wrapKey unwrapKey; secrets: get list set backup.',
        });
      }
      return normPolicy(e);
    });
  }

  /** PUT vault: create, update (accessPolicies in the body replace the list, as `az keyvault set-policy` relies on) or recover. */
  async createOrUpdateVault(sub: string, rg: string, name: string, input: VaultInput): Promise<{ vault: Vault; created: boolean }> {
    const group = await this.d.resources.requireGroup(sub, rg);
    const nameErr = vaultNameError(name);
    // Azure's code and wording (VaultNameNotValid), with rsvault's precise reason.
    if (nameErr) throw new ArmError(400, 'VaultNameNotValid', `The vault name '${name}' is invalid. A vault's name must be between 3-24 alphanumeric characters. The name must begin with a letter, end with a letter or digit, and not contain consecutive hyphens (${nameErr.replace(/\.$/, '')}).`, { target: 'name' });
    const id = vaultArmId(sub, group.name, name);
    const existing = await this.d.store.vaultByName(name);
    const p = input.properties ?? {};
    const tenantId = this.d.identity.tenantId;
    if (p.tenantId && p.tenantId.toLowerCase() !== tenantId.toLowerCase()) {
      throw new ArmError(400, 'BadRequest', `The tenant id '${p.tenantId}' of the vault must be the subscription's tenant '${tenantId}'.`, { target: 'properties.tenantId' });
    }
    if (existing && existing.id_norm !== id.toLowerCase()) {
      if (existing.state === 'Deleted') throw new ArmError(409, 'ConflictError', `A vault with the same name already exists in deleted state. You need to either recover or purge existing key vault '${name}'.`, { recommendation: `rsvault keyvault recover -n ${name}  or  rsvault keyvault purge -n ${name}` });
      throw new ArmError(409, 'VaultAlreadyExists', `The vault name '${name}' is already in use. Vault names are globally unique so it is possible that the name is already taken.`, { recommendation: 'Pick another vault name.' });
    }
    const now = Date.now();
    if (p.createMode?.toLowerCase() === 'recover') {
      if (!existing || existing.state !== 'Deleted') throw new ArmError(404, 'ResourceNotFound', `No deleted vault named '${name}' exists to recover.`);
      await this.d.store.db.updateTable('keyvault_vaults').set({ state: 'Active', deleted_at: null, purge_at: null, updated_at: now }).where('id_norm', '=', existing.id_norm).execute();
      const v = this.toVault((await this.d.store.vaultById(id))!);
      await this.indexVault(v);
      return { vault: v, created: true };
    }
    if (existing?.state === 'Deleted') {
      throw new ArmError(409, 'ConflictError', `A vault with the same name already exists in deleted state. You need to either recover or purge existing key vault '${name}'.`, { recommendation: `rsvault keyvault recover -n ${name}  or  rsvault keyvault purge -n ${name}` });
    }
    const cur = existing ? this.toVault(existing) : undefined;
    const retention = p.softDeleteRetentionInDays ?? cur?.softDeleteRetentionInDays ?? 90;
    if (!Number.isInteger(retention) || retention < 7 || retention > 90) throw armErrors.invalidContent('softDeleteRetentionInDays must be an integer from 7 to 90.', 'properties.softDeleteRetentionInDays');
    const props: Props = {
      tenantId,
      sku: { family: p.sku?.family ?? 'A', name: p.sku?.name ?? cur?.sku.name ?? 'standard' },
      accessPolicies: p.accessPolicies ? this.validatePolicies(p.accessPolicies, tenantId) : (cur?.accessPolicies ?? []),
      enabledForDeployment: p.enabledForDeployment ?? cur?.enabledForDeployment ?? false,
      enabledForDiskEncryption: p.enabledForDiskEncryption ?? cur?.enabledForDiskEncryption ?? false,
      enabledForTemplateDeployment: p.enabledForTemplateDeployment ?? cur?.enabledForTemplateDeployment ?? false,
      enableSoftDelete: p.enableSoftDelete ?? cur?.enableSoftDelete ?? true,
      softDeleteRetentionInDays: retention,
      enablePurgeProtection: p.enablePurgeProtection ?? cur?.enablePurgeProtection ?? false,
      enableRbacAuthorization: p.enableRbacAuthorization ?? cur?.enableRbacAuthorization ?? false,
      publicNetworkAccess: p.publicNetworkAccess ?? cur?.publicNetworkAccess ?? 'Enabled',
      ...(p.networkAcls !== undefined || cur?.networkAcls !== undefined ? { networkAcls: p.networkAcls ?? cur?.networkAcls } : {}),
    };
    if (!['standard', 'premium'].includes(props.sku.name.toLowerCase())) throw armErrors.invalidContent(`Invalid sku name '${props.sku.name}': use standard or premium.`, 'properties.sku.name');
    if (cur) this.checkIrreversible(cur, props);
    if (props.enablePurgeProtection && !props.enableSoftDelete) throw new ArmError(400, 'BadRequest', 'Purge protection needs soft delete: enableSoftDelete must be true when enablePurgeProtection is true.');
    const tags = JSON.stringify(input.tags ?? cur?.tags ?? {});
    if (existing) {
      await this.d.store.db.updateTable('keyvault_vaults').set({ props_json: JSON.stringify(props), tags_json: tags, updated_at: now }).where('id_norm', '=', existing.id_norm).execute();
    } else {
      await this.d.store.db
        .insertInto('keyvault_vaults')
        .values({ id_norm: id.toLowerCase(), id, name, name_norm: name.toLowerCase(), subscription_id: sub, resource_group: group.name.toLowerCase(), location: input.location, tags_json: tags, props_json: JSON.stringify(props), state: 'Active', created_at: now, updated_at: now, deleted_at: null, purge_at: null })
        .execute();
    }
    const v = this.toVault((await this.d.store.vaultById(id))!);
    await this.indexVault(v);
    return { vault: v, created: !existing };
  }

  private checkIrreversible(cur: Vault, next: Props): void {
    if (cur.enableSoftDelete && !next.enableSoftDelete) throw new ArmError(400, 'BadRequest', 'The property "enableSoftDelete" has been set to true previously and cannot be set to false: soft delete cannot be turned off once enabled.');
    if (cur.enablePurgeProtection && !next.enablePurgeProtection) throw new ArmError(400, 'BadRequest', 'The property "enablePurgeProtection" cannot be set to false: purge protection cannot be turned off once enabled.');
    if (cur.softDeleteRetentionInDays !== next.softDeleteRetentionInDays) throw new ArmError(400, 'BadRequest', `The property "softDeleteRetentionInDays" is ${cur.softDeleteRetentionInDays} and cannot be changed after the vault is created.`);
  }

  private async indexVault(v: Vault): Promise<void> {
    await this.d.resources.index({ id: v.id, subscriptionId: v.subscriptionId, resourceGroup: v.resourceGroup, type: VAULT_TYPE, name: v.name, location: v.location, tags: v.tags });
  }

  async patchVault(sub: string, rg: string, name: string, patch: VaultPatch): Promise<Vault> {
    const cur = await this.requireVault(sub, rg, name);
    const pp = patch.properties ?? {};
    return (
      await this.createOrUpdateVault(sub, rg, name, {
        location: cur.location,
        tags: patch.tags ?? cur.tags,
        properties: { ...pp, accessPolicies: pp.accessPolicies ?? cur.accessPolicies, softDeleteRetentionInDays: pp.softDeleteRetentionInDays ?? cur.softDeleteRetentionInDays, createMode: undefined },
      })
    ).vault;
  }

  async updateAccessPolicies(sub: string, rg: string, name: string, kind: 'add' | 'replace' | 'remove', policies: AccessPolicyEntry[]): Promise<Vault> {
    const cur = await this.requireVault(sub, rg, name);
    const list = applyPolicyChange(cur.accessPolicies, kind, this.validatePolicies(policies, cur.tenantId));
    const props = await this.d.store.vaultById(cur.id);
    const p = JSON.parse(props!.props_json) as Props;
    p.accessPolicies = list;
    await this.d.store.db.updateTable('keyvault_vaults').set({ props_json: JSON.stringify(p), updated_at: Date.now() }).where('id_norm', '=', cur.id.toLowerCase()).execute();
    return (await this.getVault(cur.id))!;
  }

  /** DELETE vault: soft-deleted (recoverable for the retention period) when soft delete is on, else purged. */
  async deleteVault(sub: string, rg: string, name: string): Promise<boolean> {
    await this.d.resources.requireGroup(sub, rg);
    const v = await this.getVault(vaultArmId(sub, rg, name));
    if (!v) return false;
    await this.deleteVaultById(v.id);
    return true;
  }

  /** Resource-group deletion hook. */
  async deleteVaultById(id: string): Promise<void> {
    const v = await this.getVault(id);
    if (!v) return;
    if (v.enableSoftDelete) {
      const now = Date.now();
      await this.d.store.db.updateTable('keyvault_vaults').set({ state: 'Deleted', deleted_at: now, purge_at: now + v.softDeleteRetentionInDays * DAY, updated_at: now }).where('id_norm', '=', id.toLowerCase()).execute();
    } else {
      await this.purgeVaultRows(v.name);
    }
    await this.d.resources.unindex(v.id);
  }

  private async purgeVaultRows(name: string): Promise<void> {
    const vn = name.toLowerCase();
    await this.d.store.db.transaction().execute(async (tx) => {
      await tx.deleteFrom('keyvault_objects').where('vault_norm', '=', vn).execute();
      await tx.deleteFrom('keyvault_vaults').where('name_norm', '=', vn).execute();
    });
  }

  async nameTaken(name: string): Promise<boolean> {
    return (await this.d.store.vaultByName(name)) !== undefined;
  }

  async listDeletedVaults(sub: string): Promise<Vault[]> {
    this.d.resources.requireSubscription(sub);
    const rows = await this.d.store.db.selectFrom('keyvault_vaults').selectAll().where('subscription_id', '=', sub).where('state', '=', 'Deleted').orderBy('name_norm').execute();
    return rows.map((r) => this.toVault(r));
  }

  async getDeletedVault(sub: string, location: string, name: string): Promise<Vault> {
    this.d.resources.requireSubscription(sub);
    const r = await this.d.store.vaultByName(name);
    if (!r || r.state !== 'Deleted' || r.subscription_id.toLowerCase() !== sub.toLowerCase() || r.location.toLowerCase() !== location.toLowerCase()) {
      throw new ArmError(404, 'ResourceNotFound', `The deleted vault '${name}' in location '${location}' was not found.`, { recommendation: 'List deleted vaults with: rsvault keyvault list-deleted' });
    }
    return this.toVault(r);
  }

  async purgeDeletedVault(sub: string, location: string, name: string): Promise<void> {
    const v = await this.getDeletedVault(sub, location, name);
    if (v.enablePurgeProtection && (v.scheduledPurgeAt ?? 0) > Date.now()) {
      throw new ArmError(409, 'DeletedVaultPurgeNotAllowed', `Operation 'DeletedVaultPurge' is not allowed: vault '${name}' has purge protection; it is purged automatically at ${new Date(v.scheduledPurgeAt!).toISOString()}.`);
    }
    await this.purgeVaultRows(v.name);
  }

  async auditEvents(vault: Vault, limit: number, beforeId?: number): Promise<AuditEvent[]> {
    const rows = await this.d.store.auditOf(vault.name.toLowerCase(), limit, beforeId);
    return rows.map((r) => ({
      id: r.id,
      time: new Date(r.at).toISOString(),
      vaultName: vault.name,
      callerObjectId: r.caller_oid,
      ...(r.caller_appid ? { callerAppId: r.caller_appid } : {}),
      operationName: r.operation,
      ...(r.object ? { object: r.object } : {}),
      httpStatusCode: r.status,
      resultType: r.result,
    }));
  }

  // =================================================================================================================
  // Authorization
  // =================================================================================================================

  private async resolveVault(ref: VaultRef): Promise<Vault> {
    let name = ref.trim();
    if (name.startsWith('/')) name = name.split('/').filter(Boolean).pop() ?? '';
    else if (/^https?:\/\//i.test(name)) name = new URL(name).hostname.split('.')[0] ?? '';
    const v = await this.getVaultByName(name);
    if (!v) throw kvErrors.vaultNotFound(name);
    return v;
  }

  private async rbacAllows(vault: Vault, objectId: string, action: string): Promise<boolean> {
    const assignments = await this.d.identity.listAssignments({ principalId: objectId });
    const vid = vault.id.toLowerCase();
    for (const a of assignments) {
      const s = ('/' + a.scope.split('/').filter(Boolean).join('/')).toLowerCase();
      if (!(s === '/' || vid === s || vid.startsWith(s + '/'))) continue;
      const role = findRole(a.roleDefinitionId);
      if (!role) continue;
      if (role.dataActions.some((p) => actionMatches(p, action)) && !role.notDataActions.some((p) => actionMatches(p, action))) return true;
    }
    return false;
  }

  private async allowed(vault: Vault, who: { objectId: string; appId?: string | undefined }, kind: 'keys' | 'secrets', perm: string): Promise<boolean> {
    // The disk-encryption platform principal is granted by the vault flag alone (access policies and RBAC alike).
    if (who.objectId === DISK_ENCRYPTION_PLATFORM.objectId) return diskEncryptionPlatformGrants(vault, kind, perm);
    if (vault.enableRbacAuthorization) return this.rbacAllows(vault, who.objectId, dataActionOf(kind, perm));
    return policyGrants(vault.accessPolicies, who, kind, perm);
  }

  private async authorize(as: KvPrincipal, vault: Vault, kind: 'keys' | 'secrets', perm: string, object: string): Promise<void> {
    if (await this.allowed(vault, as, kind, perm)) return;
    const who = `appid=${as.appId ?? ''};oid=${as.objectId};iss=${this.d.issuer(as.tenantId)}`;
    if (vault.enableRbacAuthorization) {
      const action = dataActionOf(kind, perm);
      throw new KeyVaultError(
        403,
        'Forbidden',
        `Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: ${who}\r\nAction: '${action}'\r\nResource: '${vault.id.toLowerCase()}/${object.toLowerCase()}'\r\nAssignment: (not found)\r\nDecisionReason: 'DeniedWithNoValidRBAC'\r\nVault: ${vault.name};location=${vault.location}\r\n`,
        'ForbiddenByRbac',
      );
    }
    throw new KeyVaultError(
      403,
      'Forbidden',
      `The user, group or application '${who}' does not have ${kind} ${perm} permission on key vault '${vault.name};location=${vault.location}'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287`,
      'AccessDenied',
    );
  }

  async hasPermissions(vaultRef: VaultRef, objectId: string, need: PermissionSet): Promise<{ keys: string[]; secrets: string[] }> {
    const vault = await this.resolveVault(vaultRef);
    const who = { objectId };
    const out = { keys: [] as string[], secrets: [] as string[] };
    for (const kind of ['keys', 'secrets'] as const) for (const p of need[kind] ?? []) if (!(await this.allowed(vault, who, kind, p))) out[kind].push(p);
    return out;
  }

  /** Resolve → authorize → run → audit (principal, operation, object, result; never values). */
  private async op<T>(as: KvPrincipal, ref: VaultRef, operation: string, kind: Kind, perm: string, object: string, fn: (v: Vault) => Promise<T>): Promise<T> {
    const vault = await this.resolveVault(ref);
    let status = 200;
    let result = 'Success';
    try {
      await this.authorize(as, vault, COLL[kind], perm, object);
      return await fn(vault);
    } catch (e) {
      status = e instanceof KeyVaultError || e instanceof ArmError ? e.status : 500;
      result = e instanceof KeyVaultError || e instanceof ArmError ? e.code : 'InternalError';
      throw e;
    } finally {
      try {
        await this.d.store.audit({ at: Date.now(), vault_norm: vault.name.toLowerCase(), caller_oid: as.objectId, caller_appid: as.appId ?? null, operation, object, status, result });
      } catch (e) {
        this.d.log?.error({ err: e }, 'key vault audit write failed');
      }
    }
  }

  // =================================================================================================================
  // Objects (shared by keys and secrets)
  // =================================================================================================================

  private base(vault: Vault, o?: DataOptions): string {
    return (o?.base ?? vault.vaultUri).replace(/\/+$/, '');
  }

  private attrs(vault: Vault, row: VersionRow, kind: Kind): ObjectAttributes {
    const a = JSON.parse(row.attributes_json) as StoredAttrs;
    return {
      enabled: a.enabled,
      ...(a.nbf !== undefined ? { nbf: a.nbf } : {}),
      ...(a.exp !== undefined ? { exp: a.exp } : {}),
      created: sec(row.created_at),
      updated: sec(row.updated_at),
      recoveryLevel: recoveryLevelOf(vault),
      recoverableDays: vault.enableSoftDelete ? vault.softDeleteRetentionInDays : 0,
      ...(kind === 'key' ? { exportable: false } : {}),
    };
  }

  private tagsOf(row: VersionRow): { tags?: Record<string, string> } {
    if (!row.tags_json) return {};
    const tags = JSON.parse(row.tags_json) as Record<string, string>;
    // The ADE tag naming the KEK: written before with a port-less URL, read as the reachable one (urls.ts).
    const kek = Object.keys(tags).find((k) => k.toLowerCase() === 'diskencryptionkeyencryptionkeyurl');
    if (kek) tags[kek] = this.d.urls.canonical(tags[kek]!);
    return { tags };
  }

  private checkName(kind: Kind, name: string): void {
    if (!OBJECT_NAME.test(name)) throw kvErrors.badParameter(`The ${kind} name '${name}' is invalid: 1-127 characters, letters, digits and hyphens only (^[0-9a-zA-Z-]+$).`);
  }

  /** Live object or 404 (soft-deleted objects are invisible here). */
  private async liveObject(vault: Vault, kind: Kind, name: string): Promise<ObjectRow> {
    const o = await this.d.store.object(vault.name.toLowerCase(), kind, name);
    if (!o || o.state !== 'active') throw kvErrors.notFound(kind, name);
    return o;
  }

  private async versionRow(vault: Vault, kind: Kind, name: string, version?: string): Promise<{ obj: ObjectRow; row: VersionRow }> {
    const obj = await this.liveObject(vault, kind, name);
    const row = version ? await this.d.store.version(obj.id, version) : await this.d.store.latest(obj.id);
    if (!row) throw kvErrors.notFound(kind, name, version);
    return { obj, row };
  }

  /** Name free for a new version? 409 when soft-deleted. Returns the existing live object, if any. */
  private async writableObject(vault: Vault, kind: Kind, name: string): Promise<ObjectRow | undefined> {
    const o = await this.d.store.object(vault.name.toLowerCase(), kind, name);
    if (o?.state === 'deleted') throw kvErrors.deletedButRecoverable(kind, name);
    return o;
  }

  private storedAttrs(a: { enabled?: unknown; nbf?: unknown; exp?: unknown } | undefined, prev?: StoredAttrs): StoredAttrs {
    const out: StoredAttrs = { enabled: prev?.enabled ?? true };
    if (prev?.nbf !== undefined) out.nbf = prev.nbf;
    if (prev?.exp !== undefined) out.exp = prev.exp;
    if (!a) return out;
    if (a.enabled !== undefined && a.enabled !== null) {
      const b = typeof a.enabled === 'boolean' ? a.enabled : typeof a.enabled === 'string' && /^(true|false)$/i.test(a.enabled) ? a.enabled.toLowerCase() === 'true' : undefined;
      if (b === undefined) throw kvErrors.badParameter("attributes.enabled must be true or false.");
      out.enabled = b;
    }
    for (const k of ['nbf', 'exp'] as const) {
      const v = a[k];
      if (v === undefined) continue;
      if (v === null) delete out[k];
      else if (typeof v === 'number' && Number.isFinite(v)) out[k] = Math.floor(v);
      else throw kvErrors.badParameter(`attributes.${k} must be a Unix time in seconds.`);
    }
    return out;
  }

  private purpose(vaultNorm: string, kind: Kind, name: string, version: string): string {
    return `keyvault/${kind}/${vaultNorm}/${name.toLowerCase()}/${version}`;
  }

  private async insertVersion(vault: Vault, kind: Kind, name: string, v: { version: string; meta: KeyMeta | SecretMeta; plaintext: Buffer; attrs: StoredAttrs; tags: Record<string, string> | undefined; created: number; updated: number }): Promise<VersionRow> {
    const vn = vault.name.toLowerCase();
    const oid = objectIdOf(vn, kind, name);
    const sealed = this.d.sealer.seal(v.plaintext, this.purpose(vn, kind, name, v.version));
    await this.d.store.db.transaction().execute(async (tx) => {
      const o = await tx.selectFrom('keyvault_objects').select('id').where('id', '=', oid).executeTakeFirst();
      if (!o) await tx.insertInto('keyvault_objects').values({ id: oid, vault_norm: vn, kind, name, name_norm: name.toLowerCase(), state: 'active', deleted_at: null, purge_at: null }).execute();
      const max = await tx.selectFrom('keyvault_versions').select((eb) => eb.fn.max('seq').as('m')).where('object_id', '=', oid).executeTakeFirst();
      await tx
        .insertInto('keyvault_versions')
        .values({
          id: `${oid}/${v.version}`,
          object_id: oid,
          version: v.version,
          seq: Number(max?.m ?? 0) + 1,
          meta_json: JSON.stringify(v.meta),
          sealed,
          attributes_json: JSON.stringify(v.attrs),
          tags_json: v.tags ? JSON.stringify(v.tags) : null,
          created_at: v.created,
          updated_at: v.updated,
        })
        .execute();
    });
    return (await this.d.store.version(oid, v.version))!;
  }

  private open(vault: Vault, kind: Kind, name: string, row: VersionRow): Buffer {
    return this.d.sealer.open(row.sealed, this.purpose(vault.name.toLowerCase(), kind, name, row.version));
  }

  private async softDelete(vault: Vault, kind: Kind, obj: ObjectRow): Promise<{ deletedDate?: number; scheduledPurgeDate?: number }> {
    if (!vault.enableSoftDelete) {
      await this.d.store.db.deleteFrom('keyvault_objects').where('id', '=', obj.id).execute();
      return {};
    }
    const now = Date.now();
    const purgeAt = now + vault.softDeleteRetentionInDays * DAY;
    await this.d.store.db.updateTable('keyvault_objects').set({ state: 'deleted', deleted_at: now, purge_at: purgeAt }).where('id', '=', obj.id).execute();
    return { deletedDate: sec(now), scheduledPurgeDate: sec(purgeAt) };
  }

  private async deletedObject(vault: Vault, kind: Kind, name: string): Promise<ObjectRow> {
    const o = await this.d.store.object(vault.name.toLowerCase(), kind, name);
    if (!o || o.state !== 'deleted') throw kvErrors.deletedNotFound(kind, name);
    return o;
  }

  private async purgeObject(vault: Vault, kind: Kind, name: string): Promise<void> {
    const o = await this.deletedObject(vault, kind, name);
    if (vault.enablePurgeProtection) throw new KeyVaultError(403, 'Forbidden', `Operation "purge" is not enabled for this vault: '${vault.name}' has purge protection; the ${kind} is purged automatically when its retention ends.`, 'PurgeNotAllowed');
    await this.d.store.db.deleteFrom('keyvault_objects').where('id', '=', o.id).execute();
  }

  private async recoverObject(vault: Vault, kind: Kind, name: string): Promise<void> {
    const o = await this.deletedObject(vault, kind, name);
    await this.d.store.db.updateTable('keyvault_objects').set({ state: 'active', deleted_at: null, purge_at: null }).where('id', '=', o.id).execute();
  }

  private deletedInfo(vault: Vault, kind: Kind, obj: ObjectRow, o?: DataOptions, when?: { deletedDate?: number; scheduledPurgeDate?: number }) {
    const deletedDate = when?.deletedDate ?? (obj.deleted_at ? sec(obj.deleted_at) : undefined);
    const scheduledPurgeDate = when?.scheduledPurgeDate ?? (obj.purge_at ? sec(obj.purge_at) : undefined);
    if (deletedDate === undefined) return {};
    return { recoveryId: `${this.base(vault, o)}/deleted${COLL[kind]}/${obj.name}`, deletedDate, scheduledPurgeDate };
  }

  private async backup(vault: Vault, kind: Kind, name: string): Promise<string> {
    const obj = await this.liveObject(vault, kind, name);
    const rows = await this.d.store.versions(obj.id);
    const payload = {
      v: 1,
      kind,
      name: obj.name,
      versions: rows.reverse().map((r) => ({ version: r.version, meta: JSON.parse(r.meta_json) as unknown, value: this.open(vault, kind, obj.name, r).toString('base64'), attributes: JSON.parse(r.attributes_json) as unknown, tags: r.tags_json ? (JSON.parse(r.tags_json) as unknown) : null, created: r.created_at, updated: r.updated_at })),
    };
    const sealed = this.d.sealer.seal(Buffer.from(JSON.stringify(payload), 'utf8'), `keyvault-backup/${kind}`);
    return b64url(Buffer.from(BACKUP_PREFIX + sealed, 'utf8'));
  }

  private async restore(vault: Vault, kind: Kind, blob: unknown): Promise<{ name: string }> {
    if (typeof blob !== 'string' || !blob) throw kvErrors.badParameter("'value' (the backup blob, base64url) is required.");
    type P = { v: number; kind: Kind; name: string; versions: { version: string; meta: KeyMeta | SecretMeta; value: string; attributes: StoredAttrs; tags: Record<string, string> | null; created: number; updated: number }[] };
    let payload: P;
    try {
      const text = decodeB64(blob)?.toString('utf8') ?? '';
      if (!text.startsWith(BACKUP_PREFIX)) throw new Error('prefix');
      payload = JSON.parse(this.d.sealer.open(text.slice(BACKUP_PREFIX.length), `keyvault-backup/${kind}`).toString('utf8')) as P;
      if (payload.v !== 1 || payload.kind !== kind || !Array.isArray(payload.versions) || !OBJECT_NAME.test(payload.name)) throw new Error('shape');
    } catch {
      throw kvErrors.badBackup();
    }
    const existing = await this.writableObject(vault, kind, payload.name);
    if (existing) throw kvErrors.alreadyExists(kind, payload.name);
    for (const v of payload.versions) {
      await this.insertVersion(vault, kind, payload.name, { version: v.version, meta: v.meta, plaintext: Buffer.from(v.value, 'base64'), attrs: v.attributes, tags: v.tags ?? undefined, created: v.created, updated: v.updated });
    }
    return { name: payload.name };
  }

  // =================================================================================================================
  // Secrets
  // =================================================================================================================

  private secretBundle(vault: Vault, name: string, row: VersionRow, value: string | undefined, o?: DataOptions): SecretBundle {
    const meta = JSON.parse(row.meta_json) as SecretMeta;
    return {
      ...(value !== undefined ? { value } : {}),
      id: `${this.base(vault, o)}/secrets/${name}/${row.version}`,
      ...(meta.contentType !== undefined ? { contentType: meta.contentType } : {}),
      attributes: this.attrs(vault, row, 'secret'),
      ...this.tagsOf(row),
    } as SecretBundle;
  }

  private secretItem(vault: Vault, name: string, row: VersionRow, o: DataOptions | undefined, versioned: boolean): SecretItem {
    const meta = JSON.parse(row.meta_json) as SecretMeta;
    return {
      id: `${this.base(vault, o)}/secrets/${name}${versioned ? '/' + row.version : ''}`,
      ...(meta.contentType !== undefined ? { contentType: meta.contentType } : {}),
      attributes: this.attrs(vault, row, 'secret'),
      ...this.tagsOf(row),
    };
  }

  private validateTags(tags: unknown): Record<string, string> | undefined {
    if (tags === undefined || tags === null) return undefined;
    if (typeof tags !== 'object' || Array.isArray(tags)) throw kvErrors.badParameter('tags must be an object of string values.');
    const t = tags as Record<string, unknown>;
    if (Object.keys(t).length > 15) throw kvErrors.badParameter('At most 15 tags are allowed.');
    for (const [k, v] of Object.entries(t)) if (typeof v !== 'string') throw kvErrors.badParameter(`tags.${k} must be a string.`);
    return t as Record<string, string>;
  }

  async setSecret(as: KvPrincipal, vaultRef: VaultRef, name: string, input: SetSecretInput, o?: DataOptions): Promise<SecretBundle> {
    return this.op(as, vaultRef, 'SecretSet', 'secret', 'set', `secrets/${name}`, async (vault) => {
      this.checkName('secret', name);
      if (typeof input?.value !== 'string') throw kvErrors.badParameter("The secret 'value' is required and must be a string.");
      if (Buffer.byteLength(input.value) > MAX_SECRET_BYTES) throw kvErrors.badParameter(`The secret value is larger than ${MAX_SECRET_BYTES} bytes.`);
      if (input.contentType !== undefined && input.contentType !== null && typeof input.contentType !== 'string') throw kvErrors.badParameter('contentType must be a string.');
      const tags = this.validateTags(input.tags);
      const attrs = this.storedAttrs(input.attributes);
      const existing = await this.writableObject(vault, 'secret', name);
      const now = Date.now();
      const row = await this.insertVersion(vault, 'secret', existing?.name ?? name, { version: newVersion(), meta: { ...(input.contentType != null ? { contentType: input.contentType } : {}) }, plaintext: Buffer.from(input.value, 'utf8'), attrs, tags, created: now, updated: now });
      return this.secretBundle(vault, existing?.name ?? name, row, input.value, o);
    });
  }

  async getSecret(as: KvPrincipal, vaultRef: VaultRef, name: string, version?: string, o?: DataOptions): Promise<SecretBundle> {
    return this.op(as, vaultRef, 'SecretGet', 'secret', 'get', `secrets/${name}${version ? '/' + version : ''}`, async (vault) => {
      const { obj, row } = await this.versionRow(vault, 'secret', name, version || undefined);
      const a = JSON.parse(row.attributes_json) as StoredAttrs;
      if (!a.enabled) throw new KeyVaultError(403, 'Forbidden', 'Operation get is not allowed on a disabled secret.', 'SecretDisabled');
      return this.secretBundle(vault, obj.name, row, this.open(vault, 'secret', obj.name, row).toString('utf8'), o);
    });
  }

  async updateSecret(as: KvPrincipal, vaultRef: VaultRef, name: string, version: string | undefined, input: { contentType?: unknown; tags?: unknown; attributes?: { enabled?: unknown; nbf?: unknown; exp?: unknown } }, o?: DataOptions): Promise<SecretBundle> {
    return this.op(as, vaultRef, 'SecretUpdate', 'secret', 'set', `secrets/${name}${version ? '/' + version : ''}`, async (vault) => {
      const { obj, row } = await this.versionRow(vault, 'secret', name, version || undefined);
      const meta = JSON.parse(row.meta_json) as SecretMeta;
      if (input.contentType !== undefined) {
        if (input.contentType !== null && typeof input.contentType !== 'string') throw kvErrors.badParameter('contentType must be a string.');
        meta.contentType = (input.contentType as string | null) ?? undefined;
      }
      const tags = input.tags !== undefined ? this.validateTags(input.tags) : row.tags_json ? (JSON.parse(row.tags_json) as Record<string, string>) : undefined;
      const attrs = this.storedAttrs(input.attributes, JSON.parse(row.attributes_json) as StoredAttrs);
      await this.d.store.db.updateTable('keyvault_versions').set({ meta_json: JSON.stringify(meta), tags_json: tags ? JSON.stringify(tags) : null, attributes_json: JSON.stringify(attrs), updated_at: Date.now() }).where('id', '=', row.id).execute();
      return this.secretBundle(vault, obj.name, (await this.d.store.version(obj.id, row.version))!, undefined, o);
    });
  }

  async listSecrets(as: KvPrincipal, vaultRef: VaultRef, o?: DataOptions): Promise<SecretItem[]> {
    return this.op(as, vaultRef, 'SecretList', 'secret', 'list', 'secrets', async (vault) => {
      const out: SecretItem[] = [];
      for (const obj of await this.d.store.objects(vault.name.toLowerCase(), 'secret', 'active')) {
        const row = await this.d.store.latest(obj.id);
        if (row) out.push(this.secretItem(vault, obj.name, row, o, false));
      }
      return out;
    });
  }

  async listSecretVersions(as: KvPrincipal, vaultRef: VaultRef, name: string, o?: DataOptions): Promise<SecretItem[]> {
    return this.op(as, vaultRef, 'SecretListVersions', 'secret', 'list', `secrets/${name}`, async (vault) => {
      const obj = await this.d.store.object(vault.name.toLowerCase(), 'secret', name);
      if (!obj || obj.state !== 'active') return [];
      return (await this.d.store.versions(obj.id)).map((r) => this.secretItem(vault, obj.name, r, o, true));
    });
  }

  async deleteSecret(as: KvPrincipal, vaultRef: VaultRef, name: string, o?: DataOptions): Promise<DeletedSecretBundle> {
    return this.op(as, vaultRef, 'SecretDelete', 'secret', 'delete', `secrets/${name}`, async (vault) => {
      const { obj, row } = await this.versionRow(vault, 'secret', name);
      const when = await this.softDelete(vault, 'secret', obj);
      return { ...this.secretBundle(vault, obj.name, row, undefined, o), ...this.deletedInfo(vault, 'secret', obj, o, when) };
    });
  }

  private async deletedSecretBundle(vault: Vault, obj: ObjectRow, o?: DataOptions): Promise<DeletedSecretBundle> {
    const row = (await this.d.store.latest(obj.id))!;
    return { ...this.secretBundle(vault, obj.name, row, undefined, o), ...this.deletedInfo(vault, 'secret', obj, o) };
  }

  async getDeletedSecret(as: KvPrincipal, vaultRef: VaultRef, name: string, o?: DataOptions): Promise<DeletedSecretBundle> {
    return this.op(as, vaultRef, 'SecretGetDeleted', 'secret', 'get', `deletedsecrets/${name}`, async (vault) => this.deletedSecretBundle(vault, await this.deletedObject(vault, 'secret', name), o));
  }

  async listDeletedSecrets(as: KvPrincipal, vaultRef: VaultRef, o?: DataOptions): Promise<DeletedSecretBundle[]> {
    return this.op(as, vaultRef, 'SecretListDeleted', 'secret', 'list', 'deletedsecrets', async (vault) => {
      const out: DeletedSecretBundle[] = [];
      for (const obj of await this.d.store.objects(vault.name.toLowerCase(), 'secret', 'deleted')) {
        const b = await this.deletedSecretBundle(vault, obj, o);
        out.push({ ...b, id: b.id.replace(/\/[0-9a-f]{32}$/, '') });
      }
      return out;
    });
  }

  async purgeDeletedSecret(as: KvPrincipal, vaultRef: VaultRef, name: string): Promise<void> {
    return this.op(as, vaultRef, 'SecretPurge', 'secret', 'purge', `deletedsecrets/${name}`, (vault) => this.purgeObject(vault, 'secret', name));
  }

  async recoverDeletedSecret(as: KvPrincipal, vaultRef: VaultRef, name: string, o?: DataOptions): Promise<SecretBundle> {
    return this.op(as, vaultRef, 'SecretRecover', 'secret', 'recover', `deletedsecrets/${name}`, async (vault) => {
      await this.recoverObject(vault, 'secret', name);
      const { obj, row } = await this.versionRow(vault, 'secret', name);
      return this.secretBundle(vault, obj.name, row, undefined, o);
    });
  }

  async backupSecret(as: KvPrincipal, vaultRef: VaultRef, name: string): Promise<string> {
    return this.op(as, vaultRef, 'SecretBackup', 'secret', 'backup', `secrets/${name}`, (vault) => this.backup(vault, 'secret', name));
  }

  async restoreSecret(as: KvPrincipal, vaultRef: VaultRef, blob: string, o?: DataOptions): Promise<SecretBundle> {
    return this.op(as, vaultRef, 'SecretRestore', 'secret', 'restore', 'secrets', async (vault) => {
      const { name } = await this.restore(vault, 'secret', blob);
      const { obj, row } = await this.versionRow(vault, 'secret', name);
      return this.secretBundle(vault, obj.name, row, undefined, o);
    });
  }

  // =================================================================================================================
  // Keys
  // =================================================================================================================

  private keyBundle(vault: Vault, name: string, row: VersionRow, o?: DataOptions): KeyBundle {
    const m = JSON.parse(row.meta_json) as KeyMeta;
    return { key: { kid: `${this.base(vault, o)}/keys/${name}/${row.version}`, kty: m.kty, key_ops: m.key_ops, n: m.n, e: m.e }, attributes: this.attrs(vault, row, 'key'), ...this.tagsOf(row) };
  }

  private keyItem(vault: Vault, name: string, row: VersionRow, o: DataOptions | undefined, versioned: boolean): KeyItem {
    return { kid: `${this.base(vault, o)}/keys/${name}${versioned ? '/' + row.version : ''}`, attributes: this.attrs(vault, row, 'key'), ...this.tagsOf(row) };
  }

  private keyOps(ops: unknown): string[] {
    if (ops === undefined || ops === null) return [...KEY_OPS];
    if (!Array.isArray(ops)) throw kvErrors.badParameter('key_ops must be an array.');
    const out: string[] = [];
    for (const op of ops) {
      const c = typeof op === 'string' ? [...KEY_OPS, 'import', 'export'].find((k) => k.toLowerCase() === op.toLowerCase()) : undefined;
      if (!c) throw kvErrors.badParameter(`Invalid key operation '${String(op)}': use ${KEY_OPS.join(', ')}.`);
      if (!out.includes(c)) out.push(c);
    }
    return out;
  }

  async createKey(as: KvPrincipal, vaultRef: VaultRef, name: string, input: CreateKeyInput = {}, o?: DataOptions): Promise<KeyBundle> {
    return this.createKeyWire(as, vaultRef, name, { kty: input.kty ?? 'RSA', key_size: input.keySize, key_ops: input.keyOps, tags: input.tags, attributes: input.attributes }, o);
  }

  async createKeyWire(as: KvPrincipal, vaultRef: VaultRef, name: string, b: { kty?: unknown; key_size?: unknown; public_exponent?: unknown; key_ops?: unknown; tags?: unknown; attributes?: { enabled?: unknown; nbf?: unknown; exp?: unknown } | undefined }, o?: DataOptions): Promise<KeyBundle> {
    return this.op(as, vaultRef, 'KeyCreate', 'key', 'create', `keys/${name}`, async (vault) => {
      this.checkName('key', name);
      if (typeof b.kty !== 'string') throw kvErrors.badParameter("'kty' is required: RSA or RSA-HSM.");
      const kty = ['RSA', 'RSA-HSM'].find((k) => k.toLowerCase() === String(b.kty).toLowerCase());
      if (!kty) throw kvErrors.badParameter(`Key type '${String(b.kty)}' is not supported: rsvault creates RSA and RSA-HSM keys.`);
      const size = b.key_size ?? 2048;
      if (size !== 2048 && size !== 3072 && size !== 4096) throw kvErrors.badParameter(`Invalid key size ${String(size)}: use 2048, 3072 or 4096.`);
      const pe = b.public_exponent ?? 65537;
      if (typeof pe !== 'number' || !Number.isInteger(pe) || pe < 3 || pe % 2 === 0) throw kvErrors.badParameter('public_exponent must be an odd integer of at least 3 (default 65537).');
      const ops = this.keyOps(b.key_ops);
      const tags = this.validateTags(b.tags);
      const attrs = this.storedAttrs(b.attributes);
      const existing = await this.writableObject(vault, 'key', name);
      const k = await generateRsa(size, pe);
      const now = Date.now();
      const kname = existing?.name ?? name;
      const row = await this.insertVersion(vault, 'key', kname, { version: newVersion(), meta: { kty, key_ops: ops, n: k.n, e: k.e }, plaintext: k.privateDer, attrs, tags, created: now, updated: now });
      return this.keyBundle(vault, kname, row, o);
    });
  }

  async importKey(as: KvPrincipal, vaultRef: VaultRef, name: string, b: { key?: unknown; Hsm?: unknown; attributes?: { enabled?: unknown; nbf?: unknown; exp?: unknown } | undefined; tags?: unknown }, o?: DataOptions): Promise<KeyBundle> {
    return this.op(as, vaultRef, 'KeyImport', 'key', 'import', `keys/${name}`, async (vault) => {
      this.checkName('key', name);
      const jwk = b.key as Record<string, unknown> | undefined;
      if (!jwk || typeof jwk !== 'object') throw kvErrors.badParameter("'key' (a JSON web key with its private parts) is required.");
      if (typeof jwk.kty !== 'string' || !/^RSA(-HSM)?$/i.test(jwk.kty)) throw kvErrors.badParameter(`Key type '${String(jwk.kty)}' is not supported for import: use RSA or RSA-HSM.`);
      const parts: Record<string, string> = {};
      for (const f of ['n', 'e', 'd', 'p', 'q', 'dp', 'dq', 'qi']) {
        const raw = jwk[f];
        const buf = typeof raw === 'string' ? decodeB64(raw) : undefined;
        if (!buf || buf.length === 0) throw kvErrors.badParameter(`The RSA key to import must include '${f}' (base64url).`);
        parts[f] = b64url(buf.subarray(buf.findIndex((x) => x !== 0) < 0 ? 0 : buf.findIndex((x) => x !== 0)));
      }
      let key: KeyObject;
      try {
        key = importRsaJwk(parts);
      } catch (e) {
        throw kvErrors.badParameter(`The RSA key is not valid: ${(e as Error).message}`);
      }
      const k = exportRsa(key);
      const hsm = b.Hsm === true || /-HSM$/i.test(String(jwk.kty));
      const ops = this.keyOps(jwk.key_ops);
      const tags = this.validateTags(b.tags);
      const attrs = this.storedAttrs(b.attributes);
      const existing = await this.writableObject(vault, 'key', name);
      const now = Date.now();
      const kname = existing?.name ?? name;
      const row = await this.insertVersion(vault, 'key', kname, { version: newVersion(), meta: { kty: hsm ? 'RSA-HSM' : 'RSA', key_ops: ops, n: k.n, e: k.e }, plaintext: k.privateDer, attrs, tags, created: now, updated: now });
      return this.keyBundle(vault, kname, row, o);
    });
  }

  async getKey(as: KvPrincipal, vaultRef: VaultRef, name: string, version?: string, o?: DataOptions): Promise<KeyBundle> {
    return this.op(as, vaultRef, 'KeyGet', 'key', 'get', `keys/${name}${version ? '/' + version : ''}`, async (vault) => {
      const { obj, row } = await this.versionRow(vault, 'key', name, version || undefined);
      return this.keyBundle(vault, obj.name, row, o);
    });
  }

  async updateKey(as: KvPrincipal, vaultRef: VaultRef, name: string, version: string | undefined, b: { key_ops?: unknown; tags?: unknown; attributes?: { enabled?: unknown; nbf?: unknown; exp?: unknown } }, o?: DataOptions): Promise<KeyBundle> {
    return this.op(as, vaultRef, 'KeyUpdate', 'key', 'update', `keys/${name}${version ? '/' + version : ''}`, async (vault) => {
      const { obj, row } = await this.versionRow(vault, 'key', name, version || undefined);
      const meta = JSON.parse(row.meta_json) as KeyMeta;
      if (b.key_ops !== undefined) meta.key_ops = this.keyOps(b.key_ops);
      const tags = b.tags !== undefined ? this.validateTags(b.tags) : row.tags_json ? (JSON.parse(row.tags_json) as Record<string, string>) : undefined;
      const attrs = this.storedAttrs(b.attributes, JSON.parse(row.attributes_json) as StoredAttrs);
      await this.d.store.db.updateTable('keyvault_versions').set({ meta_json: JSON.stringify(meta), tags_json: tags ? JSON.stringify(tags) : null, attributes_json: JSON.stringify(attrs), updated_at: Date.now() }).where('id', '=', row.id).execute();
      return this.keyBundle(vault, obj.name, (await this.d.store.version(obj.id, row.version))!, o);
    });
  }

  async listKeys(as: KvPrincipal, vaultRef: VaultRef, o?: DataOptions): Promise<KeyItem[]> {
    return this.op(as, vaultRef, 'KeyList', 'key', 'list', 'keys', async (vault) => {
      const out: KeyItem[] = [];
      for (const obj of await this.d.store.objects(vault.name.toLowerCase(), 'key', 'active')) {
        const row = await this.d.store.latest(obj.id);
        if (row) out.push(this.keyItem(vault, obj.name, row, o, false));
      }
      return out;
    });
  }

  async listKeyVersions(as: KvPrincipal, vaultRef: VaultRef, name: string, o?: DataOptions): Promise<KeyItem[]> {
    return this.op(as, vaultRef, 'KeyListVersions', 'key', 'list', `keys/${name}`, async (vault) => {
      const obj = await this.d.store.object(vault.name.toLowerCase(), 'key', name);
      if (!obj || obj.state !== 'active') return [];
      return (await this.d.store.versions(obj.id)).map((r) => this.keyItem(vault, obj.name, r, o, true));
    });
  }

  async deleteKey(as: KvPrincipal, vaultRef: VaultRef, name: string, o?: DataOptions): Promise<DeletedKeyBundle> {
    return this.op(as, vaultRef, 'KeyDelete', 'key', 'delete', `keys/${name}`, async (vault) => {
      const { obj, row } = await this.versionRow(vault, 'key', name);
      const when = await this.softDelete(vault, 'key', obj);
      return { ...this.keyBundle(vault, obj.name, row, o), ...this.deletedInfo(vault, 'key', obj, o, when) };
    });
  }

  private async deletedKeyBundle(vault: Vault, obj: ObjectRow, o?: DataOptions): Promise<DeletedKeyBundle> {
    const row = (await this.d.store.latest(obj.id))!;
    return { ...this.keyBundle(vault, obj.name, row, o), ...this.deletedInfo(vault, 'key', obj, o) };
  }

  async getDeletedKey(as: KvPrincipal, vaultRef: VaultRef, name: string, o?: DataOptions): Promise<DeletedKeyBundle> {
    return this.op(as, vaultRef, 'KeyGetDeleted', 'key', 'get', `deletedkeys/${name}`, async (vault) => this.deletedKeyBundle(vault, await this.deletedObject(vault, 'key', name), o));
  }

  async listDeletedKeys(as: KvPrincipal, vaultRef: VaultRef, o?: DataOptions): Promise<(KeyItem & { recoveryId?: string; deletedDate?: number; scheduledPurgeDate?: number })[]> {
    return this.op(as, vaultRef, 'KeyListDeleted', 'key', 'list', 'deletedkeys', async (vault) => {
      const out = [];
      for (const obj of await this.d.store.objects(vault.name.toLowerCase(), 'key', 'deleted')) {
        const row = (await this.d.store.latest(obj.id))!;
        out.push({ ...this.keyItem(vault, obj.name, row, o, false), ...this.deletedInfo(vault, 'key', obj, o) });
      }
      return out;
    });
  }

  async purgeDeletedKey(as: KvPrincipal, vaultRef: VaultRef, name: string): Promise<void> {
    return this.op(as, vaultRef, 'KeyPurge', 'key', 'purge', `deletedkeys/${name}`, (vault) => this.purgeObject(vault, 'key', name));
  }

  async recoverDeletedKey(as: KvPrincipal, vaultRef: VaultRef, name: string, o?: DataOptions): Promise<KeyBundle> {
    return this.op(as, vaultRef, 'KeyRecover', 'key', 'recover', `deletedkeys/${name}`, async (vault) => {
      await this.recoverObject(vault, 'key', name);
      const { obj, row } = await this.versionRow(vault, 'key', name);
      return this.keyBundle(vault, obj.name, row, o);
    });
  }

  async backupKey(as: KvPrincipal, vaultRef: VaultRef, name: string): Promise<string> {
    return this.op(as, vaultRef, 'KeyBackup', 'key', 'backup', `keys/${name}`, (vault) => this.backup(vault, 'key', name));
  }

  async restoreKey(as: KvPrincipal, vaultRef: VaultRef, blob: string, o?: DataOptions): Promise<KeyBundle> {
    return this.op(as, vaultRef, 'KeyRestore', 'key', 'restore', 'keys', async (vault) => {
      const { name } = await this.restore(vault, 'key', blob);
      const { obj, row } = await this.versionRow(vault, 'key', name);
      return this.keyBundle(vault, obj.name, row, o);
    });
  }

  // ---- cryptographic operations -------------------------------------------------------------------------------------

  private async usableKey(vault: Vault, name: string, version: string | undefined, op: string): Promise<{ obj: ObjectRow; row: VersionRow; meta: KeyMeta }> {
    const { obj, row } = await this.versionRow(vault, 'key', name, version || undefined);
    const meta = JSON.parse(row.meta_json) as KeyMeta;
    const a = JSON.parse(row.attributes_json) as StoredAttrs;
    const now = sec(Date.now());
    if (!a.enabled) throw new KeyVaultError(403, 'Forbidden', `Operation ${op} is not allowed on a disabled key.`, 'KeyDisabled');
    if ((a.nbf !== undefined && now < a.nbf) || (a.exp !== undefined && now > a.exp)) throw new KeyVaultError(403, 'Forbidden', `Operation ${op} is not allowed: the key is not yet valid or has expired.`, 'KeyNotYetValidOrExpired');
    if (!meta.key_ops.some((k) => k.toLowerCase() === op.toLowerCase())) throw new KeyVaultError(403, 'Forbidden', `Operation ${op} is not allowed on this key: its key_ops are ${meta.key_ops.join(', ')}.`, 'KeyOperationForbidden');
    return { obj, row, meta };
  }

  private alg(alg: unknown): EncryptionAlgorithm {
    const a = ENCRYPTION_ALGORITHMS.find((x) => typeof alg === 'string' && x.toLowerCase() === alg.toLowerCase());
    if (!a) throw kvErrors.badParameter(`Invalid algorithm '${String(alg)}': use ${ENCRYPTION_ALGORITHMS.join(', ')}.`);
    return a;
  }

  private async crypt(as: KvPrincipal, vaultRef: VaultRef, name: string, version: string | undefined, op: 'wrapKey' | 'unwrapKey' | 'encrypt' | 'decrypt', alg: unknown, value: Buffer, o?: DataOptions): Promise<KeyOperationResult> {
    const auditName = { wrapKey: 'KeyWrap', unwrapKey: 'KeyUnwrap', encrypt: 'KeyEncrypt', decrypt: 'KeyDecrypt' }[op];
    return this.op(as, vaultRef, auditName, 'key', op, `keys/${name}${version ? '/' + version : ''}`, async (vault) => {
      const a = this.alg(alg);
      const { obj, row, meta } = await this.usableKey(vault, name, version, op);
      const kid = `${this.base(vault, o)}/keys/${obj.name}/${row.version}`;
      try {
        if (op === 'wrapKey' || op === 'encrypt') return { kid, value: rsaEncrypt(publicKeyOf(meta.n, meta.e), a, value) };
        return { kid, value: rsaDecrypt(privateKeyOf(this.open(vault, 'key', obj.name, row)), a, value) };
      } catch (e) {
        if (e instanceof CryptoInputError) throw kvErrors.badParameter(`${op}: ${e.message}.`);
        throw e;
      }
    });
  }

  wrapKey(as: KvPrincipal, vaultRef: VaultRef, name: string, version: string | undefined, alg: EncryptionAlgorithm, value: Buffer, o?: DataOptions): Promise<KeyOperationResult> {
    return this.crypt(as, vaultRef, name, version, 'wrapKey', alg, value, o);
  }
  unwrapKey(as: KvPrincipal, vaultRef: VaultRef, name: string, version: string | undefined, alg: EncryptionAlgorithm, value: Buffer, o?: DataOptions): Promise<KeyOperationResult> {
    return this.crypt(as, vaultRef, name, version, 'unwrapKey', alg, value, o);
  }
  cryptWire(as: KvPrincipal, vaultRef: VaultRef, name: string, version: string | undefined, op: 'wrapKey' | 'unwrapKey' | 'encrypt' | 'decrypt', alg: unknown, value: Buffer, o?: DataOptions): Promise<KeyOperationResult> {
    return this.crypt(as, vaultRef, name, version, op, alg, value, o);
  }

  async sign(as: KvPrincipal, vaultRef: VaultRef, name: string, version: string | undefined, alg: unknown, digest: Buffer, o?: DataOptions): Promise<KeyOperationResult> {
    return this.op(as, vaultRef, 'KeySign', 'key', 'sign', `keys/${name}${version ? '/' + version : ''}`, async (vault) => {
      const { obj, row } = await this.usableKey(vault, name, version, 'sign');
      try {
        return { kid: `${this.base(vault, o)}/keys/${obj.name}/${row.version}`, value: rsaSign(privateKeyOf(this.open(vault, 'key', obj.name, row)), String(alg), digest) };
      } catch (e) {
        if (e instanceof CryptoInputError) throw kvErrors.badParameter(`sign: ${e.message}.`);
        throw e;
      }
    });
  }

  async verify(as: KvPrincipal, vaultRef: VaultRef, name: string, version: string | undefined, alg: unknown, digest: Buffer, signature: Buffer): Promise<boolean> {
    return this.op(as, vaultRef, 'KeyVerify', 'key', 'verify', `keys/${name}${version ? '/' + version : ''}`, async (vault) => {
      const { meta } = await this.usableKey(vault, name, version, 'verify');
      try {
        return rsaVerify(publicKeyOf(meta.n, meta.e), String(alg), digest, signature);
      } catch (e) {
        if (e instanceof CryptoInputError) throw kvErrors.badParameter(`verify: ${e.message}.`);
        throw e;
      }
    });
  }
}
