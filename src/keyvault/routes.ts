/**
 * ARM surface of Microsoft.KeyVault: vaults (PUT/GET/PATCH/DELETE/list), accessPolicies/{add|replace|remove},
 * deleted vaults (list/get/purge; recover = PUT with createMode "recover"), checkNameAvailability, and two rsvault
 * extensions: access-policy templates (GET /providers/Microsoft.KeyVault/accessPolicyTemplates) and the data-plane
 * audit log of a vault (GET …/vaults/{name}/auditEvents).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { ArmError } from '../platform/http/errors.js';
import { requireArmApiVersion } from '../platform/http/api-version.js';
import { originOf } from '../platform/http/app.js';
import { paginate } from '../platform/http/paging.js';
import type { ResourceService } from '../resources/index.js';
import { ACCESS_POLICY_TEMPLATES, vaultNameError, VAULT_TYPE, type Vault } from './model.js';
import type { KeyVaultServiceImpl, VaultInput } from './service.js';

const Tags = Type.Record(Type.String({ maxLength: 512 }), Type.String({ maxLength: 256 }));
const PermList = Type.Array(Type.String({ minLength: 1 }), { maxItems: 64 });
const Policy = Type.Object(
  {
    tenantId: Type.String({ minLength: 1 }),
    objectId: Type.String({ minLength: 1 }),
    applicationId: Type.Optional(Type.Union([Type.String(), Type.Null()])),
    permissions: Type.Object(
      { keys: Type.Optional(PermList), secrets: Type.Optional(PermList), certificates: Type.Optional(PermList), storage: Type.Optional(PermList) },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);
const Props = Type.Object(
  {
    tenantId: Type.Optional(Type.String()),
    sku: Type.Optional(Type.Object({ family: Type.Optional(Type.String()), name: Type.String() }, { additionalProperties: false })),
    accessPolicies: Type.Optional(Type.Array(Policy)),
    vaultUri: Type.Optional(Type.Union([Type.String(), Type.Null()])),
    enabledForDeployment: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
    enabledForDiskEncryption: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
    enabledForTemplateDeployment: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
    enableSoftDelete: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
    softDeleteRetentionInDays: Type.Optional(Type.Union([Type.Integer(), Type.Null()])),
    enablePurgeProtection: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
    enableRbacAuthorization: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
    createMode: Type.Optional(Type.Union([Type.Literal('default'), Type.Literal('recover'), Type.Null()])),
    networkAcls: Type.Optional(Type.Unknown()),
    publicNetworkAccess: Type.Optional(Type.Union([Type.String(), Type.Null()])),
    provisioningState: Type.Optional(Type.String()),
    hsmPoolResourceId: Type.Optional(Type.Unknown()),
    privateEndpointConnections: Type.Optional(Type.Unknown()),
  },
  { additionalProperties: false },
);
const VaultBody = Type.Object(
  {
    location: Type.String({ minLength: 1, maxLength: 64 }),
    tags: Type.Optional(Tags),
    properties: Props,
    id: Type.Optional(Type.String()),
    name: Type.Optional(Type.String()),
    type: Type.Optional(Type.String()),
    systemData: Type.Optional(Type.Unknown()),
  },
  { additionalProperties: false },
);
const VaultPatchBody = Type.Object({ tags: Type.Optional(Tags), properties: Type.Optional(Type.Partial(Props)) }, { additionalProperties: false });
const PolicyBody = Type.Object(
  {
    properties: Type.Object({ accessPolicies: Type.Array(Policy) }, { additionalProperties: false }),
    id: Type.Optional(Type.String()),
    name: Type.Optional(Type.String()),
    type: Type.Optional(Type.String()),
    location: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
);
const NameBody = Type.Object({ name: Type.String(), type: Type.Optional(Type.String()) }, { additionalProperties: false });

/** Drops nulls (ARM clients send `"enablePurgeProtection": null` for "unset"). */
function stripNulls<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== null)) as T;
}

export function vaultView(v: Vault) {
  return {
    id: v.id,
    name: v.name,
    type: VAULT_TYPE,
    location: v.location,
    tags: v.tags,
    systemData: { createdAt: new Date(v.createdAt).toISOString(), lastModifiedAt: new Date(v.updatedAt).toISOString() },
    properties: {
      tenantId: v.tenantId,
      sku: v.sku,
      accessPolicies: v.accessPolicies,
      vaultUri: v.vaultUri,
      enabledForDeployment: v.enabledForDeployment,
      enabledForDiskEncryption: v.enabledForDiskEncryption,
      enabledForTemplateDeployment: v.enabledForTemplateDeployment,
      enableSoftDelete: v.enableSoftDelete,
      softDeleteRetentionInDays: v.softDeleteRetentionInDays,
      enableRbacAuthorization: v.enableRbacAuthorization,
      ...(v.enablePurgeProtection ? { enablePurgeProtection: true } : {}),
      ...(v.networkAcls !== undefined ? { networkAcls: v.networkAcls } : {}),
      publicNetworkAccess: v.publicNetworkAccess,
      provisioningState: 'Succeeded',
    },
  };
}

function deletedView(v: Vault) {
  return {
    id: `/subscriptions/${v.subscriptionId}/providers/Microsoft.KeyVault/locations/${v.location}/deletedVaults/${v.name}`,
    name: v.name,
    type: 'Microsoft.KeyVault/deletedVaults',
    properties: {
      vaultId: v.id,
      location: v.location,
      deletionDate: new Date(v.deletedAt ?? 0).toISOString(),
      scheduledPurgeDate: new Date(v.scheduledPurgeAt ?? 0).toISOString(),
      tags: v.tags,
      purgeProtectionEnabled: v.enablePurgeProtection,
    },
  };
}

export function registerKeyVaultRoutes(app: FastifyInstance, deps: { keyvault: KeyVaultServiceImpl; resources: ResourceService }): void {
  const { keyvault: kv, resources } = deps;
  resources.registerDeleter(VAULT_TYPE, (id) => kv.deleteVaultById(id));

  const RG = '/subscriptions/:sub/resourceGroups/:rg/providers/Microsoft.KeyVault/vaults';
  const V = `${RG}/:name`;
  type P = { sub: string; rg: string; name: string };
  const A = 'Microsoft.KeyVault/vaults';

  app.put(V, { schema: { body: VaultBody }, config: { action: `${A}/write` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    const { sub, rg, name } = req.params as P;
    const b = req.body as Static<typeof VaultBody>;
    const { vault, created } = await kv.createOrUpdateVault(sub, rg, name, { location: b.location, tags: b.tags, properties: stripNulls(b.properties) as VaultInput['properties'] });
    return reply.code(created ? 201 : 200).send(vaultView(vault));
  });
  app.patch(V, { schema: { body: VaultPatchBody }, config: { action: `${A}/write` } }, async (req) => {
    requireArmApiVersion(req.url);
    const { sub, rg, name } = req.params as P;
    const b = req.body as Static<typeof VaultPatchBody>;
    return vaultView(await kv.patchVault(sub, rg, name, { tags: b.tags, properties: b.properties ? (stripNulls(b.properties) as VaultInput['properties']) : undefined }));
  });
  app.get(V, { config: { action: `${A}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const { sub, rg, name } = req.params as P;
    return vaultView(await kv.requireVault(sub, rg, name));
  });
  app.delete(V, { config: { action: `${A}/delete` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    const { sub, rg, name } = req.params as P;
    return reply.code((await kv.deleteVault(sub, rg, name)) ? 200 : 204).send();
  });
  app.get(RG, { config: { action: `${A}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const { sub, rg } = req.params as P;
    return paginate((await kv.listVaults(sub, rg)).map(vaultView), new URL(req.url, originOf(req)));
  });
  app.get('/subscriptions/:sub/providers/Microsoft.KeyVault/vaults', { config: { action: `${A}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const { sub } = req.params as P;
    return paginate((await kv.listVaults(sub)).map(vaultView), new URL(req.url, originOf(req)));
  });
  app.put(`${V}/accessPolicies/:kind`, { schema: { body: PolicyBody }, config: { action: `${A}/accessPolicies/write` } }, async (req) => {
    requireArmApiVersion(req.url);
    const { sub, rg, name, kind } = req.params as P & { kind: string };
    const k = kind.toLowerCase();
    if (k !== 'add' && k !== 'replace' && k !== 'remove') throw new ArmError(400, 'InvalidRequestContent', `Invalid access policy operation '${kind}': use add, replace or remove.`, { target: 'operationKind' });
    const b = req.body as Static<typeof PolicyBody>;
    const v = await kv.updateAccessPolicies(sub, rg, name, k, b.properties.accessPolicies.map((p) => ({ ...p, applicationId: p.applicationId ?? undefined })));
    return { id: `${v.id}/accessPolicies/${k}`, type: 'Microsoft.KeyVault/vaults/accessPolicies', location: v.location, properties: { accessPolicies: v.accessPolicies } };
  });
  app.get(`${V}/auditEvents`, { config: { action: `${A}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const { sub, rg, name } = req.params as P;
    const v = await kv.requireVault(sub, rg, name);
    const q = new URL(req.url, 'https://x').searchParams;
    const top = Math.min(Math.max(Number(q.get('$top') ?? 100) || 100, 1), 1000);
    const before = q.get('$skiptoken');
    const events = await kv.auditEvents(v, top, before && /^\d+$/.test(before) ? Number(before) : undefined);
    const out: { value: unknown[]; nextLink?: string } = { value: events };
    if (events.length === top) {
      const next = new URL(req.url, originOf(req));
      next.searchParams.set('$skiptoken', String(events[events.length - 1]!.id));
      out.nextLink = next.href;
    }
    return out;
  });

  // ---- deleted vaults ------------------------------------------------------------------------------------------------
  app.get('/subscriptions/:sub/providers/Microsoft.KeyVault/deletedVaults', { config: { action: 'Microsoft.KeyVault/deletedVaults/read' } }, async (req) => {
    requireArmApiVersion(req.url);
    const { sub } = req.params as P;
    return paginate((await kv.listDeletedVaults(sub)).map(deletedView), new URL(req.url, originOf(req)));
  });
  // Managed HSMs are not offered by rsvault: their lists exist (empty, with the paging shape) so that clients listing
  // vaults and HSMs together (az keyvault list / list-deleted) work.
  const noHsms = async (req: FastifyRequest) => {
    requireArmApiVersion(req.url);
    const { sub, rg } = req.params as P & { rg?: string };
    resources.requireSubscription(sub);
    if (rg) await resources.requireGroup(sub, rg);
    return paginate([], new URL(req.url, originOf(req)));
  };
  app.get('/subscriptions/:sub/providers/Microsoft.KeyVault/deletedManagedHSMs', { config: { action: 'Microsoft.KeyVault/deletedManagedHSMs/read' } }, noHsms);
  app.get('/subscriptions/:sub/providers/Microsoft.KeyVault/managedHSMs', { config: { action: 'Microsoft.KeyVault/managedHSMs/read' } }, noHsms);
  app.get('/subscriptions/:sub/resourceGroups/:rg/providers/Microsoft.KeyVault/managedHSMs', { config: { action: 'Microsoft.KeyVault/managedHSMs/read' } }, noHsms);
  const DV = '/subscriptions/:sub/providers/Microsoft.KeyVault/locations/:loc/deletedVaults/:name';
  app.get(DV, { config: { action: 'Microsoft.KeyVault/deletedVaults/read' } }, async (req) => {
    requireArmApiVersion(req.url);
    const { sub, loc, name } = req.params as P & { loc: string };
    return deletedView(await kv.getDeletedVault(sub, loc, name));
  });
  app.post(`${DV}/purge`, { config: { action: 'Microsoft.KeyVault/locations/deletedVaults/purge/action' } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    const { sub, loc, name } = req.params as P & { loc: string };
    await kv.purgeDeletedVault(sub, loc, name);
    return reply.code(200).send();
  });
  app.post('/subscriptions/:sub/providers/Microsoft.KeyVault/checkNameAvailability', { schema: { body: NameBody }, config: { action: `${A}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const { name } = req.body as Static<typeof NameBody>;
    const err = vaultNameError(name);
    if (err) return { nameAvailable: false, reason: 'AccountNameInvalid', message: `The vault name '${name}' is invalid: ${err}` };
    const taken = await kv.nameTaken(name);
    return taken ? { nameAvailable: false, reason: 'AlreadyExists', message: `The vault name '${name}' is already in use.` } : { nameAvailable: true };
  });

  // ---- rsvault extension: access-policy templates (the portal's "Configure from template"; CLI --template) ----------
  app.get('/providers/Microsoft.KeyVault/accessPolicyTemplates', { config: { plane: 'arm', open: 'authenticated' } }, async (req: FastifyRequest) => {
    requireArmApiVersion(req.url);
    return { value: ACCESS_POLICY_TEMPLATES.map((t) => ({ name: t.name, description: t.description, permissions: t.permissions })) };
  });
}
