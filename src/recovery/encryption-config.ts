/**
 * The vault's encryption settings: `GET|PUT …/vaults/{v}/backupEncryptionConfigs/backupResourceEncryptionConfig`
 * (swagger recoveryservicesbackup, BackupResourceEncryptionConfigs_Get/Update; the GET answers a
 * BackupResourceEncryptionConfigExtendedResource, the PUT answers 200 with no body).
 *
 * A vault starts with platform-managed keys (`MicrosoftManaged`). A customer-managed key (`CustomerManaged`) names a
 * key of a key vault of this installation (`keyUri`) and the vault identity that reaches it (system-assigned or a
 * user-assigned id). Azure's rules hold: a customer-managed key can only be set while no item is protected in the
 * vault, it cannot be switched back to platform-managed keys, and infrastructure encryption is chosen once, with the
 * first customer-managed key. A vault whose properties carry `encryption` (vault PUT/PATCH) reports that until the
 * first PUT here. rsvault records the setting (the chunk store keys stay sealed by the installation's master key).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ArmError, armErrors } from '../platform/http/errors.js';
import { requireArmApiVersion } from '../platform/http/api-version.js';
import { parseObjectUrl } from '../keyvault/index.js';
import type { RecoveryService, VaultRow } from './service.js';

const RS = 'Microsoft.RecoveryServices/Vaults';
const V = '/subscriptions/:sub/resourceGroups/:rg/providers/Microsoft.RecoveryServices/vaults/:vault';
const PATH = `${V}/backupEncryptionConfigs/backupResourceEncryptionConfig`;
type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const AT_REST = ['MicrosoftManaged', 'CustomerManaged'] as const;
const INFRA = ['Enabled', 'Disabled'] as const;
const UAI_RE = /^\/subscriptions\/[^/]+\/resourceGroups\/[^/]+\/providers\/Microsoft\.ManagedIdentity\/userAssignedIdentities\/[^/]+$/i;

export interface EncryptionConfig {
  encryptionAtRestType: (typeof AT_REST)[number];
  keyUri?: string | undefined;
  subscriptionId?: string | undefined;
  lastUpdateStatus: string;
  infrastructureEncryptionState: (typeof INFRA)[number];
  userAssignedIdentity?: string | undefined;
  useSystemAssignedIdentity?: boolean | undefined;
}

const pick = <T extends string>(allowed: readonly T[], v: unknown, target: string): T | undefined => {
  if (v === undefined || v === null) return undefined;
  const hit = typeof v === 'string' ? allowed.find((a) => a.toLowerCase() === v.toLowerCase()) : undefined;
  if (!hit) throw armErrors.invalidContent(`'${target}' must be one of ${allowed.map((a) => `'${a}'`).join(', ')} (got ${JSON.stringify(v)}).`, target);
  return hit;
};
const optStr = (o: Obj, k: string, target: string): string | undefined => {
  const v = o[k];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw armErrors.invalidContent(`'${target}' must be a string.`, target);
  return v;
};

/** What the vault's own properties say (vault PUT/PATCH `properties.encryption`), when no config was PUT here. */
function fromVaultProps(v: VaultRow): EncryptionConfig | undefined {
  const e = (JSON.parse(v.props_json) as Obj).encryption;
  if (!isObj(e) || !isObj(e.keyVaultProperties) || typeof e.keyVaultProperties.keyUri !== 'string') return undefined;
  const kek = isObj(e.kekIdentity) ? e.kekIdentity : {};
  return {
    encryptionAtRestType: 'CustomerManaged',
    keyUri: e.keyVaultProperties.keyUri,
    lastUpdateStatus: 'Succeeded',
    infrastructureEncryptionState: String(e.infrastructureEncryption ?? '').toLowerCase() === 'enabled' ? 'Enabled' : 'Disabled',
    ...(typeof kek.userAssignedIdentity === 'string' ? { userAssignedIdentity: kek.userAssignedIdentity } : {}),
    ...(typeof kek.useSystemAssignedIdentity === 'boolean' ? { useSystemAssignedIdentity: kek.useSystemAssignedIdentity } : {}),
  };
}

export async function encryptionConfigOf(svc: RecoveryService, v: VaultRow): Promise<EncryptionConfig> {
  const r = await svc.db.selectFrom('recovery_encryption_configs').selectAll().where('vault_norm', '=', v.id_norm).executeTakeFirst();
  if (!r) return fromVaultProps(v) ?? { encryptionAtRestType: 'MicrosoftManaged', lastUpdateStatus: 'NotEnabled', infrastructureEncryptionState: 'Disabled' };
  return {
    encryptionAtRestType: r.at_rest_type as EncryptionConfig['encryptionAtRestType'],
    ...(r.key_uri ? { keyUri: r.key_uri } : {}),
    ...(r.key_subscription_id ? { subscriptionId: r.key_subscription_id } : {}),
    lastUpdateStatus: r.last_update_status,
    infrastructureEncryptionState: r.infrastructure_state as EncryptionConfig['infrastructureEncryptionState'],
    ...(r.user_assigned_identity ? { userAssignedIdentity: r.user_assigned_identity } : {}),
    ...(r.use_system_assigned_identity !== null ? { useSystemAssignedIdentity: r.use_system_assigned_identity === 1 } : {}),
  };
}

function view(v: VaultRow, c: EncryptionConfig) {
  return {
    id: `${v.id}/backupEncryptionConfigs/backupResourceEncryptionConfig`,
    name: 'backupResourceEncryptionConfig',
    type: 'Microsoft.RecoveryServices/vaults/backupEncryptionConfigs',
    properties: c,
  };
}

/** The vault identity types (`SystemAssigned`, `UserAssigned`, both) and its user-assigned ids. */
function identityOf(v: VaultRow): { system: boolean; user: string[] } {
  const id = v.identity_json ? (JSON.parse(v.identity_json) as Obj) : {};
  const type = typeof id.type === 'string' ? id.type.toLowerCase() : 'none';
  return { system: type.includes('systemassigned'), user: isObj(id.userAssignedIdentities) ? Object.keys(id.userAssignedIdentities).map((k) => k.toLowerCase()) : [] };
}

export function registerEncryptionConfigRoutes(app: FastifyInstance, svc: RecoveryService): void {
  const vault = (req: FastifyRequest) => {
    const p = req.params as { sub: string; rg: string; vault: string };
    return svc.requireVault(p.sub, p.rg, p.vault);
  };

  app.get(PATH, { config: { action: `${RS}/backupEncryptionConfigs/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const v = await vault(req);
    return view(v, await encryptionConfigOf(svc, v));
  });

  app.put(PATH, { config: { action: `${RS}/backupEncryptionConfigs/write` } }, async (req, reply: FastifyReply) => {
    requireArmApiVersion(req.url);
    const v = await vault(req);
    const b = req.body;
    if (!isObj(b) || !isObj(b.properties)) throw armErrors.invalidContent('The request body must be {"properties": {"encryptionAtRestType": "CustomerManaged", "keyUri": "https://{vault}/keys/{key}/{version}", "infrastructureEncryptionState": "Disabled"}}.', 'properties');
    const p = b.properties;
    const sys = p.useSystemAssignedIdentity;
    if (sys !== undefined && sys !== null && typeof sys !== 'boolean') throw armErrors.invalidContent("'properties.useSystemAssignedIdentity' must be a boolean.", 'properties.useSystemAssignedIdentity');
    await applyEncryptionConfig(svc, v, {
      encryptionAtRestType: pick(AT_REST, p.encryptionAtRestType, 'properties.encryptionAtRestType'),
      infrastructureEncryptionState: pick(INFRA, p.infrastructureEncryptionState, 'properties.infrastructureEncryptionState'),
      keyUri: optStr(p, 'keyUri', 'properties.keyUri'),
      subscriptionId: optStr(p, 'subscriptionId', 'properties.subscriptionId'),
      userAssignedIdentity: optStr(p, 'userAssignedIdentity', 'properties.userAssignedIdentity'),
      useSystemAssignedIdentity: (sys ?? undefined) as boolean | undefined,
    });
    return reply.code(200).send();
  });
}

export interface EncryptionInput {
  encryptionAtRestType?: EncryptionConfig['encryptionAtRestType'] | undefined;
  infrastructureEncryptionState?: EncryptionConfig['infrastructureEncryptionState'] | undefined;
  keyUri?: string | undefined;
  subscriptionId?: string | undefined;
  userAssignedIdentity?: string | undefined;
  useSystemAssignedIdentity?: boolean | undefined;
}

/**
 * Validates and stores the vault's encryption settings (the PUT here, and the vault PATCH's `properties.encryption`
 * as `az backup vault encryption update` sends it). `v` carries the identity the vault has (or is about to get).
 */
export async function applyEncryptionConfig(svc: RecoveryService, v: VaultRow, input: EncryptionInput): Promise<EncryptionConfig> {
  const cur = await encryptionConfigOf(svc, v);
  const type = input.encryptionAtRestType ?? cur.encryptionAtRestType;
  const infra = input.infrastructureEncryptionState;
  const { keyUri, subscriptionId } = input;
  const uai = input.userAssignedIdentity;
  const sys = input.useSystemAssignedIdentity;
  const wasCmk = cur.encryptionAtRestType === 'CustomerManaged';

  if (type === 'MicrosoftManaged') {
    if (wasCmk) throw new ArmError(400, 'UserErrorCmkCannotBeDisabled', `Vault '${v.name}' is encrypted with a customer-managed key; a vault cannot return to platform-managed keys.`, { target: 'properties.encryptionAtRestType', recommendation: 'Keep the customer-managed key (you may change the key with a new keyUri), or use a new vault.' });
    if (keyUri || uai || sys === true) throw armErrors.invalidContent("'keyUri' and the identity apply to 'CustomerManaged' encryption only.", 'properties.keyUri');
    if (infra === 'Enabled') throw armErrors.invalidContent("Infrastructure encryption is chosen with the first customer-managed key: send 'CustomerManaged' with it.", 'properties.infrastructureEncryptionState');
    return save(svc, v, { encryptionAtRestType: 'MicrosoftManaged', lastUpdateStatus: 'Succeeded', infrastructureEncryptionState: 'Disabled' });
  }

  // CustomerManaged.
  const uri = keyUri ?? cur.keyUri;
  if (!uri) throw armErrors.invalidContent("'properties.keyUri' is required for 'CustomerManaged' encryption: the URL of a key (https://{vault}.{host}/keys/{name}[/{version}]).", 'properties.keyUri');
  const o = parseObjectUrl(uri);
  if (!o || o.collection !== 'keys' || !/^https:$/i.test(new URL(uri).protocol)) throw armErrors.invalidContent(`'properties.keyUri' '${uri}' is not a Key Vault key URL (https://{vault}.{host}/keys/{name}[/{version}]).`, 'properties.keyUri');
  const kv = await svc.d.keyvault.getVaultByName(o.vaultName);
  if (!kv) throw new ArmError(400, 'UserErrorCmkKeyVaultNotFound', `The key vault '${o.vaultName}' of keyUri '${uri}' does not exist in this installation.`, { target: 'properties.keyUri', recommendation: `Create the key vault and key first (rsvault keyvault create -n ${o.vaultName} …; rsvault keyvault key create --vault-name ${o.vaultName} -n ${o.name} …).` });
  if (!wasCmk && (await svc.activeItemCount(v.id_norm)) > 0) {
    throw new ArmError(400, 'UserErrorCmkVaultHasItems', `Vault '${v.name}' already holds protected items; a customer-managed key can only be set on a vault with no items protected or registered.`, { recommendation: 'Set the key on a new vault before enabling protection, or keep platform-managed keys.' });
  }
  if (wasCmk && infra !== undefined && infra !== cur.infrastructureEncryptionState) {
    throw armErrors.invalidContent(`Infrastructure encryption of vault '${v.name}' is ${cur.infrastructureEncryptionState} and cannot be changed after the first customer-managed key.`, 'properties.infrastructureEncryptionState');
  }
  if (uai !== undefined && !UAI_RE.test(uai)) throw armErrors.invalidContent(`'properties.userAssignedIdentity' '${uai}' is not a user-assigned identity id (/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}).`, 'properties.userAssignedIdentity');
  if (uai !== undefined && sys === true) throw armErrors.invalidContent("Give either 'userAssignedIdentity' or 'useSystemAssignedIdentity': true, not both.", 'properties.userAssignedIdentity');
  const ident = identityOf(v);
  let useSystem: boolean | undefined = sys === true ? true : uai ? false : cur.useSystemAssignedIdentity;
  let user = uai ?? (useSystem ? undefined : cur.userAssignedIdentity);
  if (useSystem === undefined && user === undefined) {
    useSystem = ident.system ? true : undefined;
    user = ident.system ? undefined : ident.user[0];
  }
  if (useSystem && !ident.system) throw new ArmError(400, 'UserErrorVaultIdentityNotEnabled', `Vault '${v.name}' has no system-assigned identity to reach the key.`, { target: 'properties.useSystemAssignedIdentity', recommendation: `Enable it: PUT the vault with "identity": {"type": "SystemAssigned"} (az backup vault identity assign --system-assigned -n ${v.name} -g <group>).` });
  if (!useSystem && !user) throw new ArmError(400, 'UserErrorVaultIdentityNotEnabled', `Vault '${v.name}' has no managed identity to reach the key.`, { target: 'properties.userAssignedIdentity', recommendation: 'Give the vault a system-assigned or user-assigned identity first, then set the key.' });
  if (user && !useSystem && !ident.user.includes(user.toLowerCase())) throw new ArmError(400, 'UserErrorVaultIdentityNotEnabled', `The user-assigned identity '${user}' is not assigned to vault '${v.name}'.`, { target: 'properties.userAssignedIdentity', recommendation: 'Assign the identity to the vault first.' });
  return save(svc, v, {
    encryptionAtRestType: 'CustomerManaged',
    keyUri: uri,
    subscriptionId: subscriptionId ?? kv.subscriptionId,
    lastUpdateStatus: 'Succeeded',
    infrastructureEncryptionState: wasCmk ? cur.infrastructureEncryptionState : (infra ?? 'Disabled'),
    ...(useSystem ? { useSystemAssignedIdentity: true } : { useSystemAssignedIdentity: false, userAssignedIdentity: user }),
  });
}

async function save(svc: RecoveryService, v: VaultRow, c: EncryptionConfig): Promise<EncryptionConfig> {
  const row = {
    vault_norm: v.id_norm,
    at_rest_type: c.encryptionAtRestType,
    key_uri: c.keyUri ?? null,
    key_subscription_id: c.subscriptionId ?? null,
    infrastructure_state: c.infrastructureEncryptionState,
    user_assigned_identity: c.userAssignedIdentity ?? null,
    use_system_assigned_identity: c.useSystemAssignedIdentity === undefined ? null : c.useSystemAssignedIdentity ? 1 : 0,
    last_update_status: c.lastUpdateStatus,
    updated_at: Date.now(),
  };
  await svc.db.transaction().execute(async (tx) => {
    await tx.deleteFrom('recovery_encryption_configs').where('vault_norm', '=', v.id_norm).execute();
    await tx.insertInto('recovery_encryption_configs').values(row).execute();
  });
  return c;
}

/** The vault PATCH's `properties.encryption` ({keyVaultProperties: {keyUri}, kekIdentity, infrastructureEncryption}). */
export function encryptionInputOf(e: Obj): EncryptionInput {
  const kvp = isObj(e.keyVaultProperties) ? e.keyVaultProperties : {};
  const kek = isObj(e.kekIdentity) ? e.kekIdentity : {};
  const sys = kek.useSystemAssignedIdentity;
  if (sys !== undefined && sys !== null && typeof sys !== 'boolean') throw armErrors.invalidContent("'properties.encryption.kekIdentity.useSystemAssignedIdentity' must be a boolean.", 'properties.encryption.kekIdentity.useSystemAssignedIdentity');
  return {
    encryptionAtRestType: 'CustomerManaged',
    keyUri: optStr(kvp, 'keyUri', 'properties.encryption.keyVaultProperties.keyUri'),
    userAssignedIdentity: optStr(kek, 'userAssignedIdentity', 'properties.encryption.kekIdentity.userAssignedIdentity'),
    useSystemAssignedIdentity: (sys ?? undefined) as boolean | undefined,
    infrastructureEncryptionState: pick(INFRA, e.infrastructureEncryption, 'properties.encryption.infrastructureEncryption'),
  };
}

/** A vault identity as Azure returns it: `type` in Azure's casing (az sends e.g. "systemassigned,userassigned"). */
export function normIdentity(id: Obj): Obj {
  const t = String(id.type).toLowerCase().replace(/\s+/g, '');
  const type = t === 'systemassigned' ? 'SystemAssigned' : t === 'userassigned' ? 'UserAssigned' : t === 'systemassigned,userassigned' ? 'SystemAssigned, UserAssigned' : t === 'none' ? 'None' : undefined;
  if (!type) throw armErrors.invalidContent(`'identity.type' '${String(id.type)}' is not one of SystemAssigned, UserAssigned, 'SystemAssigned, UserAssigned', None.`, 'identity.type');
  return { ...id, type };
}
