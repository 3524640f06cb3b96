/**
 * ARM surface of Microsoft.RecoveryServices (vaults) and its backup sub-resources, paths and status codes as
 * azure-backup-api.md lists them. Thin: validate → (RBAC by route config) → service → view.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ArmError, armErrors } from '../platform/http/errors.js';
import { requireArmApiVersion } from '../platform/http/api-version.js';
import { originOf } from '../platform/http/app.js';
import { paginate } from '../platform/http/paging.js';
import { accepted, retryAfterWhileRunning, type AsyncOperations } from '../platform/http/async-ops.js';
import { containerName, filterDate, itemName, parseContainerName, parseFilter, requireNames, shortContainerName, type VmRef } from './model.js';
import { RecoveryError, recoveryErrors } from './errors.js';
import { RecoveryService, refOfItem, type ItemRow, type JobRow, type VaultRow } from './service.js';
import type { Protection } from './backup.js';
import type { Restore } from './restore.js';
import { applyEncryptionConfig, encryptionInputOf, normIdentity } from './encryption-config.js';
import { containerView, itemView, jobView, policyView, pointView, protectableView, storageConfigView, vaultConfigView, vaultView } from './views.js';

export interface RecoveryRouteDeps {
  recovery: RecoveryService;
  protection: Protection;
  restore?: Restore | undefined;
  ops: AsyncOperations;
}

const RS = 'Microsoft.RecoveryServices/Vaults';
const V = '/subscriptions/:sub/resourceGroups/:rg/providers/Microsoft.RecoveryServices/vaults/:vault';
const C = `${V}/backupFabrics/:fabric/protectionContainers/:container`;
const I = `${C}/protectedItems/:item`;

type VP = { sub: string; rg: string; vault: string };
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function bodyObject(req: FastifyRequest, what: string): Record<string, unknown> {
  const b = req.body;
  if (b === undefined || b === null) throw armErrors.invalidContent(`The request body is required: ${what}.`);
  if (!isObj(b)) throw armErrors.invalidContent(`The request body must be a JSON object: ${what}.`);
  return b;
}

function optString(o: Record<string, unknown>, k: string, target: string): string | undefined {
  const v = o[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw armErrors.invalidContent(`'${target}' must be a string.`, target);
  return v;
}

function tagsOf(o: Record<string, unknown>): Record<string, string> | undefined {
  const t = o.tags;
  if (t === undefined || t === null) return undefined;
  if (!isObj(t) || Object.values(t).some((x) => typeof x !== 'string')) throw armErrors.invalidContent("'tags' must be an object of string values.", 'tags');
  return t as Record<string, string>;
}

function requireFabric(f: string): void {
  if (f.toLowerCase() !== 'azure') throw new ArmError(404, 'BMSUserErrorFabricNotFound', `The backup fabric '${f}' does not exist; Azure VMs live in fabric 'Azure'.`, { recommendation: "Use 'Azure' as the fabric name." });
}

export function registerRecoveryRoutes(app: FastifyInstance, deps: RecoveryRouteDeps): void {
  const { recovery: svc, protection, ops } = deps;

  const vault = async (req: FastifyRequest): Promise<VaultRow> => {
    const p = req.params as VP;
    return svc.requireVault(p.sub, p.rg, p.vault);
  };
  const q = (req: FastifyRequest) => req.query as Record<string, string | undefined>;
  const urlOf = (req: FastifyRequest) => new URL(req.url, originOf(req));
  const link = (req: FastifyRequest, pathPart: string, api: string) => `${originOf(req)}${pathPart}?api-version=${encodeURIComponent(api)}`;
  const protectedCount = async (v: VaultRow) => (await svc.listItems(v)).filter((i) => i.deferred_delete_at === null && i.policy_name).length;

  // ---- vaults ----------------------------------------------------------------------------------------------------
  app.put(V, { config: { action: `${RS}/write` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    const p = req.params as VP;
    const b = bodyObject(req, '{"location": "...", "sku": {"name": "Standard"}, "properties": {}}');
    const location = optString(b, 'location', 'location');
    if (!location) throw armErrors.invalidContent("The request content was invalid: 'location' is required.", 'location');
    if (b.sku !== undefined && !isObj(b.sku)) throw armErrors.invalidContent("'sku' must be an object such as {\"name\":\"Standard\"}.", 'sku');
    if (b.properties !== undefined && b.properties !== null && !isObj(b.properties)) throw armErrors.invalidContent("'properties' must be an object.", 'properties');
    const { vault: v, created } = await svc.putVault(p.sub, p.rg, p.vault, { location, tags: tagsOf(b), sku: b.sku as Record<string, unknown> | undefined, identity: b.identity, properties: (b.properties ?? undefined) as Record<string, unknown> | undefined });
    return reply.code(created ? 201 : 200).send(vaultView(v, await protectedCount(v)));
  });
  app.patch(V, { config: { action: `${RS}/write` } }, async (req) => {
    requireArmApiVersion(req.url);
    const v = await vault(req);
    const b = bodyObject(req, '{"tags": {...}}');
    if (b.properties !== undefined && b.properties !== null && !isObj(b.properties)) throw armErrors.invalidContent("'properties' must be an object.", 'properties');
    if (b.identity !== undefined && b.identity !== null && (!isObj(b.identity) || typeof b.identity.type !== 'string')) throw armErrors.invalidContent("'identity' must be an object such as {\"type\": \"SystemAssigned\"}.", 'identity');
    const identity = isObj(b.identity) ? normIdentity(b.identity) : undefined;
    // properties.encryption (az backup vault encryption update): the vault's customer-managed key, checked and
    // recorded as backupResourceEncryptionConfig before anything else of the PATCH is written.
    if (isObj(b.properties) && isObj(b.properties.encryption)) await applyEncryptionConfig(svc, identity ? { ...v, identity_json: JSON.stringify(identity) } : v, encryptionInputOf(b.properties.encryption));
    const nv = await svc.patchVault(v, { tags: tagsOf(b), identity, properties: (b.properties ?? undefined) as Record<string, unknown> | undefined });
    return vaultView(nv, await protectedCount(nv));
  });
  app.get(V, { config: { action: `${RS}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const v = await vault(req);
    return vaultView(v, await protectedCount(v));
  });
  app.delete(V, { config: { action: `${RS}/delete` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    const p = req.params as VP;
    await svc.d.resources.requireGroup(p.sub, p.rg);
    const v = await svc.getVault(p.sub, p.rg, p.vault);
    if (!v) return reply.code(204).send();
    await svc.deleteVault(v);
    return reply.code(200).send();
  });
  app.get('/subscriptions/:sub/resourceGroups/:rg/providers/Microsoft.RecoveryServices/vaults', { config: { action: `${RS}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const p = req.params as { sub: string; rg: string };
    const rows = await svc.listVaults(p.sub, p.rg);
    return paginate(await Promise.all(rows.map(async (v) => vaultView(v, await protectedCount(v)))), urlOf(req));
  });
  app.get('/subscriptions/:sub/providers/Microsoft.RecoveryServices/vaults', { config: { action: `${RS}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const p = req.params as { sub: string };
    const rows = await svc.listVaults(p.sub);
    return paginate(await Promise.all(rows.map(async (v) => vaultView(v, await protectedCount(v)))), urlOf(req));
  });
  app.post('/subscriptions/:sub/resourceGroups/:rg/providers/Microsoft.RecoveryServices/locations/:loc/checkNameAvailability', { config: { action: 'Microsoft.RecoveryServices/locations/checkNameAvailability/action' } }, async (req) => {
    requireArmApiVersion(req.url);
    const p = req.params as { sub: string; rg: string };
    const b = bodyObject(req, '{"type": "Microsoft.RecoveryServices/Vaults", "name": "..."}');
    const name = optString(b, 'name', 'name');
    if (!name) throw armErrors.invalidContent("'name' is required.", 'name');
    const taken = !!(await svc.getVault(p.sub, p.rg, name));
    return taken ? { nameAvailable: false, reason: 'AlreadyExists', message: `Resource '${name}' already exists.` } : { nameAvailable: true };
  });

  app.get('/providers/Microsoft.RecoveryServices/operations', { config: { plane: 'public' } }, async (req) => {
    requireArmApiVersion(req.url);
    const ops = ['Vaults/read', 'Vaults/write', 'Vaults/delete', 'Vaults/backupPolicies/read', 'Vaults/backupPolicies/write', 'Vaults/backupPolicies/delete', 'Vaults/backupProtectableItems/read', 'Vaults/backupProtectedItems/read', 'Vaults/backupFabrics/refreshContainers/action', 'Vaults/backupFabrics/protectionContainers/protectedItems/read', 'Vaults/backupFabrics/protectionContainers/protectedItems/write', 'Vaults/backupFabrics/protectionContainers/protectedItems/delete', 'Vaults/backupFabrics/protectionContainers/protectedItems/backup/action', 'Vaults/backupFabrics/protectionContainers/protectedItems/recoveryPoints/read', 'Vaults/backupJobs/read', 'Vaults/backupJobs/cancelJob/action', 'Vaults/backupstorageconfig/read', 'Vaults/backupstorageconfig/write', 'Vaults/backupconfig/read', 'Vaults/backupconfig/write', 'locations/backupPreValidateProtection/action', 'locations/backupStatus/action'];
    return { value: ops.map((o) => ({ name: `Microsoft.RecoveryServices/${o}`, display: { provider: 'Microsoft Recovery Services', resource: o.split('/').slice(0, -1).join('/') || 'Vaults', operation: o, description: o }, origin: 'user' })) };
  });

  // ---- storage config / vault config -----------------------------------------------------------------------------
  const storageHandler = async (req: FastifyRequest, reply: FastifyReply) => {
    requireArmApiVersion(req.url);
    const v = await vault(req);
    const b = bodyObject(req, '{"properties": {"storageType": "LocallyRedundant"}}');
    const props = b.properties;
    if (!isObj(props)) throw armErrors.invalidContent("'properties' is required: {\"storageType\": \"LocallyRedundant\" | \"GeoRedundant\"}.", 'properties');
    const crr = props.crossRegionRestoreFlag;
    if (crr !== undefined && typeof crr !== 'boolean') throw armErrors.invalidContent("'properties.crossRegionRestoreFlag' must be a boolean.", 'properties.crossRegionRestoreFlag');
    const nv = await svc.setStorageConfig(v, { storageType: optString(props, 'storageType', 'properties.storageType'), storageModelType: optString(props, 'storageModelType', 'properties.storageModelType'), crossRegionRestoreFlag: crr as boolean | undefined });
    if (req.method === 'PATCH') return reply.code(204).send();
    return storageConfigView(nv, (await svc.activeItemCount(nv.id_norm)) > 0);
  };
  app.get(`${V}/backupstorageconfig/vaultstorageconfig`, { config: { action: `${RS}/backupstorageconfig/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const v = await vault(req);
    return storageConfigView(v, (await svc.activeItemCount(v.id_norm)) > 0);
  });
  app.put(`${V}/backupstorageconfig/vaultstorageconfig`, { config: { action: `${RS}/backupstorageconfig/write` } }, storageHandler);
  app.patch(`${V}/backupstorageconfig/vaultstorageconfig`, { config: { action: `${RS}/backupstorageconfig/write` } }, storageHandler);

  const vaultConfigHandler = async (req: FastifyRequest) => {
    requireArmApiVersion(req.url);
    const v = await vault(req);
    const b = bodyObject(req, '{"properties": {"softDeleteFeatureState": "Enabled"}}');
    if (!isObj(b.properties)) throw armErrors.invalidContent("'properties' is required, e.g. {\"softDeleteFeatureState\": \"Disabled\"}.", 'properties');
    return vaultConfigView(await svc.setVaultConfig(v, b.properties));
  };
  app.get(`${V}/backupconfig/vaultconfig`, { config: { action: `${RS}/backupconfig/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    return vaultConfigView(await vault(req));
  });
  app.put(`${V}/backupconfig/vaultconfig`, { config: { action: `${RS}/backupconfig/write` } }, vaultConfigHandler);
  app.patch(`${V}/backupconfig/vaultconfig`, { config: { action: `${RS}/backupconfig/write` } }, vaultConfigHandler);

  // ---- policies ---------------------------------------------------------------------------------------------------
  app.get(`${V}/backupPolicies`, { config: { action: `${RS}/backupPolicies/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const v = await vault(req);
    const f = parseFilter(q(req).$filter);
    const bmt = f.find((c) => c.field === 'backupmanagementtype');
    const rows = bmt && bmt.value.toLowerCase() !== 'azureiaasvm' ? [] : await svc.listPolicies(v);
    return paginate(await Promise.all(rows.map(async (p) => policyView(v, p, await svc.protectedCount(v, p.name_norm)))), urlOf(req));
  });
  app.get(`${V}/backupPolicies/:policy`, { config: { action: `${RS}/backupPolicies/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const v = await vault(req);
    const p = await svc.requirePolicy(v, (req.params as { policy: string }).policy);
    return policyView(v, p, await svc.protectedCount(v, p.name_norm));
  });
  app.put(`${V}/backupPolicies/:policy`, { config: { action: `${RS}/backupPolicies/write` } }, async (req) => {
    requireArmApiVersion(req.url);
    const v = await vault(req);
    const b = bodyObject(req, '{"properties": {"backupManagementType": "AzureIaasVM", "schedulePolicy": {...}, "retentionPolicy": {...}}}');
    const p = await svc.putPolicy(v, (req.params as { policy: string }).policy, b.properties);
    return policyView(v, p, await svc.protectedCount(v, p.name_norm));
  });
  app.delete(`${V}/backupPolicies/:policy`, { config: { action: `${RS}/backupPolicies/delete` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    const v = await vault(req);
    const existed = await svc.deletePolicy(v, (req.params as { policy: string }).policy);
    return reply.code(existed ? 200 : 204).send();
  });

  // ---- async operation status / results --------------------------------------------------------------------------
  const opOf = async (v: VaultRow, opId: string) => {
    const op = await ops.get(opId);
    if (!op || !(op.resourceId ?? '').toLowerCase().startsWith(v.id_norm)) {
      throw new ArmError(404, 'BMSUserErrorOperationNotFound', `The operation '${opId}' was not found in vault '${v.name}'.`);
    }
    return op;
  };
  const statusView = async (v: VaultRow, opId: string, reply: FastifyReply) => {
    const op = await opOf(v, opId);
    retryAfterWhileRunning(reply, op.status);
    const job = await svc.db.selectFrom('recovery_jobs').select('id').where('op_id', '=', opId).executeTakeFirst();
    const jobId = (op.result as { jobId?: string } | undefined)?.jobId ?? job?.id;
    return {
      id: op.id,
      name: op.id,
      status: op.status,
      startTime: op.startTime,
      ...(op.endTime ? { endTime: op.endTime } : {}),
      ...(op.error ? { error: { code: op.error.code, message: op.error.message } } : {}),
      properties: jobId ? { objectType: 'OperationStatusJobExtendedInfo', jobId } : null,
    };
  };
  const resultReply = async (req: FastifyRequest, reply: FastifyReply, v: VaultRow, opId: string, done: () => Promise<unknown>) => {
    const op = await opOf(v, opId);
    if (op.status === 'InProgress') {
      const api = q(req)['api-version'] ?? '2023-02-01';
      return accepted(reply, { location: link(req, urlOf(req).pathname, api) }, 1);
    }
    if (op.status === 'Failed' || op.status === 'Canceled') {
      const e = op.error ?? { code: 'OperationFailed', message: 'The operation failed.' };
      const rec = e.additionalInfo?.find((a) => a.type === 'Recommendation')?.info?.text as string | undefined;
      throw new RecoveryError(e.code === 'UserErrorBackupOperationInProgress' ? 409 : e.code === 'BCMV2VMNotFound' ? 404 : 400, e.code, e.message, { recommendation: rec });
    }
    const body = await done();
    if (body === undefined) return reply.code(204).send();
    return reply.code(200).send(body);
  };
  const opParams = (req: FastifyRequest) => req.params as VP & { op: string };

  app.get(`${V}/backupOperations/:op`, { config: { action: `${RS}/backupOperations/read` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    return statusView(await vault(req), opParams(req).op, reply);
  });
  app.get(`${V}/backupOperationResults/:op`, { config: { action: `${RS}/backupOperationResults/read` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    return resultReply(req, reply, await vault(req), opParams(req).op, async () => undefined);
  });
  app.get(`${V}/backupPolicies/:policy/operations/:op`, { config: { action: `${RS}/backupPolicies/operationsStatus/read` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    return statusView(await vault(req), opParams(req).op, reply);
  });
  app.get(`${V}/backupPolicies/:policy/operationResults/:op`, { config: { action: `${RS}/backupPolicies/operationResults/read` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    const v = await vault(req);
    return resultReply(req, reply, v, opParams(req).op, async () => {
      const p = await svc.getPolicy(v, (req.params as { policy: string }).policy);
      return p ? policyView(v, p, await svc.protectedCount(v, p.name_norm)) : undefined;
    });
  });
  app.get(`${V}/backupFabrics/:fabric/operationResults/:op`, { config: { action: `${RS}/backupFabrics/operationResults/read` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    requireFabric((req.params as { fabric: string }).fabric);
    return resultReply(req, reply, await vault(req), opParams(req).op, async () => undefined);
  });
  app.get(`${C}/operationResults/:op`, { config: { action: `${RS}/backupFabrics/protectionContainers/operationResults/read` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    return resultReply(req, reply, await vault(req), opParams(req).op, async () => undefined);
  });
  app.get(`${I}/operationsStatus/:op`, { config: { action: `${RS}/backupFabrics/protectionContainers/protectedItems/operationsStatus/read` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    return statusView(await vault(req), opParams(req).op, reply);
  });
  app.get(`${I}/operationResults/:op`, { config: { action: `${RS}/backupFabrics/protectionContainers/protectedItems/operationResults/read` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    const v = await vault(req);
    const p = req.params as { container: string; item: string; op: string };
    const op = await opOf(v, p.op);
    return resultReply(req, reply, v, p.op, async () => {
      if (!/protectedItems\/write$/i.test(await opKind(svc, p.op, op.resourceId))) return undefined;
      const ref = requireNames(p.container, p.item);
      const item = await svc.getItem(v, ref);
      return item ? presentItem(v, item) : undefined;
    });
  });
  app.get(`${V}/backupJobs/:job/operationResults/:op`, { config: { action: `${RS}/backupJobs/operationResults/read` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    return resultReply(req, reply, await vault(req), opParams(req).op, async () => undefined);
  });

  // ---- discovery -------------------------------------------------------------------------------------------------
  app.post(`${V}/backupFabrics/:fabric/refreshContainers`, { config: { action: `${RS}/backupFabrics/refreshContainers/action` } }, async (req, reply) => {
    const api = requireArmApiVersion(req.url);
    const v = await vault(req);
    requireFabric((req.params as { fabric: string }).fabric);
    const opId = await ops.start('Microsoft.RecoveryServices/vaults/backupFabrics/refreshContainers/action', `${v.id}/backupFabrics/Azure`, async () => {
      await svc.protectables(v); // discovery: enumerate the subscription's VMs in the vault's region
      return undefined;
    });
    return accepted(reply, { location: link(req, `${v.id}/backupFabrics/Azure/operationResults/${opId}`, api) }, 1);
  });
  app.get(`${V}/backupProtectableItems`, { config: { action: `${RS}/backupProtectableItems/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const v = await vault(req);
    const f = parseFilter(q(req).$filter);
    let list = await svc.protectables(v, req.caller!); // only the VMs the caller may read
    for (const c of f) {
      const val = c.value.toLowerCase();
      if (c.field === 'backupmanagementtype' && val !== 'azureiaasvm') list = [];
      if (c.field === 'workloadtype' && val !== 'vm') list = [];
      if (c.field === 'friendlyname') list = list.filter((x) => x.friendlyName.toLowerCase() === val);
      if (c.field === 'status') list = list.filter((x) => x.protectionState.toLowerCase() === val);
      if (c.field === 'containername') list = list.filter((x) => containerName(x.ref).toLowerCase() === val || shortContainerName(x.ref).toLowerCase() === val);
    }
    return paginate(list.map((x) => protectableView(v, x)), urlOf(req), 200, '$skipToken');
  });
  app.get(`${V}/backupProtectionContainers`, { config: { action: `${RS}/backupProtectionContainers/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const v = await vault(req);
    const f = parseFilter(q(req).$filter);
    let items = await svc.listItems(v);
    const fn = f.find((c) => c.field === 'friendlyname');
    if (fn) items = items.filter((i) => i.vm_name.toLowerCase() === fn.value.toLowerCase());
    const bmt = f.find((c) => c.field === 'backupmanagementtype');
    if (bmt && bmt.value.toLowerCase() !== 'azureiaasvm') items = [];
    return paginate(items.map((i) => containerView(v, i)), urlOf(req), 200, '$skipToken');
  });
  app.get(C, { config: { action: `${RS}/backupFabrics/protectionContainers/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const v = await vault(req);
    const p = req.params as { fabric: string; container: string };
    requireFabric(p.fabric);
    const ref = parseContainerName(p.container);
    if (!ref) throw new ArmError(400, 'BMSUserErrorInvalidInput', `The container name '${p.container}' is invalid: expected 'IaasVMContainer;iaasvmcontainerv2;{resourceGroup};{vmName}'.`);
    const item = await svc.getItem(v, ref);
    if (!item) throw new ArmError(404, 'BMSUserErrorContainerNotFound', `The protection container '${p.container}' is not registered in vault '${v.name}'.`, { recommendation: 'Enable protection of the VM first (rsvault backup protection enable-for-vm).' });
    return containerView(v, item);
  });
  app.get(`${V}/backupResourceGuardProxies`, { config: { action: `${RS}/backupResourceGuardProxies/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    await vault(req);
    return { value: [] };
  });

  // ---- protected items -------------------------------------------------------------------------------------------
  const presentItem = async (v: VaultRow, i: ItemRow) => {
    const points = await svc.listPoints(i.id_norm);
    const pol = i.policy_name ? await svc.getPolicy(v, i.policy_name) : undefined;
    return itemView(v, i, { policyDisplayName: pol?.name, points, now: svc.now() });
  };
  const itemOf = async (req: FastifyRequest): Promise<{ v: VaultRow; ref: VmRef; item: ItemRow }> => {
    const v = await vault(req);
    const p = req.params as { fabric: string; container: string; item: string };
    requireFabric(p.fabric);
    const ref = requireNames(p.container, p.item);
    return { v, ref, item: await svc.requireItem(v, ref) };
  };

  app.get(`${V}/backupProtectedItems`, { config: { action: `${RS}/backupProtectedItems/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const v = await vault(req);
    const f = parseFilter(q(req).$filter);
    let items = await svc.listItems(v);
    for (const c of f) {
      const val = c.value.toLowerCase();
      if (c.field === 'backupmanagementtype' && val !== 'azureiaasvm') items = [];
      if (c.field === 'itemtype' && val !== 'vm') items = [];
      if (c.field === 'friendlyname') items = items.filter((i) => i.vm_name.toLowerCase() === val);
      if (c.field === 'policyname') items = items.filter((i) => (i.policy_name ?? '') === val);
      if (c.field === 'containername') items = items.filter((i) => [containerName(refOfItem(i)), shortContainerName(refOfItem(i))].some((n) => n.toLowerCase() === val));
    }
    return paginate(await Promise.all(items.map((i) => presentItem(v, i))), urlOf(req), 200, '$skipToken');
  });
  app.get(I, { config: { action: `${RS}/backupFabrics/protectionContainers/protectedItems/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const { v, item } = await itemOf(req);
    return presentItem(v, item);
  });
  app.put(I, { config: { action: `${RS}/backupFabrics/protectionContainers/protectedItems/write` } }, async (req, reply) => {
    const api = requireArmApiVersion(req.url);
    const v = await vault(req);
    const p = req.params as { fabric: string; container: string; item: string };
    requireFabric(p.fabric);
    const ref = requireNames(p.container, p.item);
    const b = bodyObject(req, '{"properties": {"protectedItemType": "Microsoft.Compute/virtualMachines", "sourceResourceId": "<VM id>", "policyId": "<policy id>"}}');
    const props = b.properties;
    if (!isObj(props)) throw armErrors.invalidContent("'properties' is required: {\"protectedItemType\", \"sourceResourceId\", \"policyId\"}.", 'properties');
    const type = optString(props, 'protectedItemType', 'properties.protectedItemType');
    if (type && !['microsoft.compute/virtualmachines', 'microsoft.classiccompute/virtualmachines'].includes(type.toLowerCase())) {
      throw armErrors.invalidContent(`properties.protectedItemType '${type}' is not supported: only 'Microsoft.Compute/virtualMachines' (Azure VMs).`, 'properties.protectedItemType');
    }
    const ext = props.extendedProperties;
    if (ext !== undefined && ext !== null && !isObj(ext)) throw armErrors.invalidContent("'properties.extendedProperties' must be an object.", 'properties.extendedProperties');
    const dex = isObj(ext) && isObj(ext.diskExclusionProperties) ? ext.diskExclusionProperties : undefined;
    const diskExclusion = !!dex && Array.isArray(dex.diskLunList) && (dex.isInclusionList === false ? dex.diskLunList.length > 0 : true);
    const rehydrate = props.isRehydrate;
    if (rehydrate !== undefined && typeof rehydrate !== 'boolean') throw armErrors.invalidContent("'properties.isRehydrate' must be a boolean.", 'properties.isRehydrate');
    const opId = await protection.beginConfigure(v, ref, {
      sourceResourceId: optString(props, 'sourceResourceId', 'properties.sourceResourceId') ?? optString(props, 'virtualMachineId', 'properties.virtualMachineId'),
      policyId: optString(props, 'policyId', 'properties.policyId'),
      protectionState: optString(props, 'protectionState', 'properties.protectionState'),
      isRehydrate: rehydrate as boolean | undefined,
      diskExclusion,
      extendedProperties: ext ?? undefined,
    }, req.caller!);
    const base = `${v.id}/backupFabrics/Azure/protectionContainers/${containerName(ref)}/protectedItems/${itemName(ref)}`;
    return accepted(reply, { asyncOperation: link(req, `${base}/operationsStatus/${opId}`, api), location: link(req, `${base}/operationResults/${opId}`, api) }, 1);
  });
  app.delete(I, { config: { action: `${RS}/backupFabrics/protectionContainers/protectedItems/delete` } }, async (req, reply) => {
    const api = requireArmApiVersion(req.url);
    const { v, item } = await itemOf(req);
    const opId = await protection.beginDelete(v, item);
    return accepted(reply, { asyncOperation: link(req, `${v.id}/backupOperations/${opId}`, api), location: link(req, `${v.id}/backupOperationResults/${opId}`, api) }, 1);
  });
  app.post(`${I}/backup`, { config: { action: `${RS}/backupFabrics/protectionContainers/protectedItems/backup/action` } }, async (req, reply) => {
    const api = requireArmApiVersion(req.url);
    const { v, ref, item } = await itemOf(req);
    const b = req.body === undefined || req.body === null ? {} : bodyObject(req, '{"properties": {"objectType": "IaasVMBackupRequest", "recoveryPointExpiryTimeInUTC": "..."}}');
    const props = b.properties;
    let expiry: number | undefined;
    if (props !== undefined && props !== null) {
      if (!isObj(props)) throw armErrors.invalidContent("'properties' must be an object.", 'properties');
      const ot = optString(props, 'objectType', 'properties.objectType');
      if (ot && ot.toLowerCase() !== 'iaasvmbackuprequest') throw armErrors.invalidContent(`properties.objectType '${ot}' is not supported: use 'IaasVMBackupRequest'.`, 'properties.objectType');
      const e = optString(props, 'recoveryPointExpiryTimeInUTC', 'properties.recoveryPointExpiryTimeInUTC');
      if (e !== undefined) {
        expiry = Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(e) ? e : e + 'Z');
        if (Number.isNaN(expiry)) throw armErrors.invalidContent(`properties.recoveryPointExpiryTimeInUTC '${e}' is not a valid date-time.`, 'properties.recoveryPointExpiryTimeInUTC');
      }
    }
    const opId = await protection.beginBackup(v, item, expiry, req.caller!);
    const base = `${v.id}/backupFabrics/Azure/protectionContainers/${containerName(ref)}/protectedItems/${itemName(ref)}`;
    return accepted(reply, { asyncOperation: link(req, `${base}/operationsStatus/${opId}`, api), location: link(req, `${base}/operationResults/${opId}`, api) }, 1);
  });

  // ---- recovery points -------------------------------------------------------------------------------------------
  app.get(`${I}/recoveryPoints`, { config: { action: `${RS}/backupFabrics/protectionContainers/protectedItems/recoveryPoints/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const { v, ref, item } = await itemOf(req);
    let points = await svc.listPoints(item.id_norm);
    for (const c of parseFilter(q(req).$filter)) {
      if (c.field === 'startdate') {
        const t = filterDate('startDate', c.value);
        points = points.filter((p) => p.time >= t);
      }
      if (c.field === 'enddate') {
        const t = filterDate('endDate', c.value);
        points = points.filter((p) => p.time <= t);
      }
    }
    const itemId = `${v.id}/backupFabrics/Azure/protectionContainers/${containerName(ref)}/protectedItems/${itemName(ref)}`;
    return paginate(points.map((p) => pointView(itemId, p)), urlOf(req), 200, '$skipToken');
  });
  app.get(`${I}/recoveryPoints/:rp`, { config: { action: `${RS}/backupFabrics/protectionContainers/protectedItems/recoveryPoints/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const { v, ref, item } = await itemOf(req);
    const id = (req.params as { rp: string }).rp;
    const rp = await svc.getPoint(item.id_norm, id);
    if (!rp) throw recoveryErrors.rpNotFound(id);
    const itemId = `${v.id}/backupFabrics/Azure/protectionContainers/${containerName(ref)}/protectedItems/${itemName(ref)}`;
    return pointView(itemId, rp, await svc.keysFor(req.caller!, item, rp)); // keyAndSecret only for readers of the VM
  });

  // ---- restore ---------------------------------------------------------------------------------------------------
  const callerOf = (req: FastifyRequest) => req.caller!; // restore checks the source VM and targets as this caller
  app.post(`${I}/recoveryPoints/:rp/restore`, { config: { action: `${RS}/backupFabrics/protectionContainers/protectedItems/recoveryPoints/restore/action` } }, async (req, reply) => {
    const api = requireArmApiVersion(req.url);
    const { v, ref, item } = await itemOf(req);
    if (!deps.restore) throw new ArmError(503, 'RestoreUnavailable', 'Restore is not available in this server.');
    const opId = await deps.restore.beginRestore(v, item, (req.params as { rp: string }).rp, req.body, originOf(req), callerOf(req));
    const base = `${v.id}/backupFabrics/Azure/protectionContainers/${containerName(ref)}/protectedItems/${itemName(ref)}`;
    return accepted(reply, { asyncOperation: link(req, `${base}/operationsStatus/${opId}`, api), location: link(req, `${base}/operationResults/${opId}`, api) }, 1);
  });
  // rsvault: restore the recovery point's key (KEK) and secret (BEK) into a key vault of this installation, as the caller.
  app.post(`${I}/recoveryPoints/:rp/restoreKeys`, { config: { action: `${RS}/backupFabrics/protectionContainers/protectedItems/recoveryPoints/restore/action` } }, async (req) => {
    requireArmApiVersion(req.url);
    const { v, item } = await itemOf(req);
    if (!deps.restore) throw new ArmError(503, 'RestoreUnavailable', 'Restore is not available in this server.');
    return deps.restore.restoreKeys(v, item, (req.params as { rp: string }).rp, req.body, callerOf(req));
  });

  // ---- jobs ------------------------------------------------------------------------------------------------------
  app.get(`${V}/backupJobs`, { config: { action: `${RS}/backupJobs/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const v = await vault(req);
    let jobs: JobRow[] = await svc.listJobs(v);
    for (const c of parseFilter(q(req).$filter)) {
      const val = c.value.toLowerCase();
      switch (c.field) {
        case 'status':
          jobs = jobs.filter((j) => j.status.toLowerCase() === val);
          break;
        case 'operation':
          jobs = jobs.filter((j) => j.operation.toLowerCase() === val);
          break;
        case 'backupmanagementtype':
          if (val !== 'azureiaasvm') jobs = [];
          break;
        case 'jobid':
          jobs = jobs.filter((j) => j.id === val);
          break;
        case 'starttime': {
          const t = filterDate('startTime', c.value);
          jobs = jobs.filter((j) => j.start_time >= t);
          break;
        }
        case 'endtime': {
          const t = filterDate('endTime', c.value);
          jobs = jobs.filter((j) => j.start_time <= t);
          break;
        }
        default:
          break;
      }
    }
    return paginate(jobs.map((j) => jobView(v, j, false)), urlOf(req), 200, '$skipToken');
  });
  app.get(`${V}/backupJobs/:job`, { config: { action: `${RS}/backupJobs/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const v = await vault(req);
    const id = (req.params as { job: string }).job;
    const j = await svc.getJob(id);
    if (!j || j.vault_norm !== v.id_norm) throw recoveryErrors.jobNotFound(id);
    return jobView(v, j);
  });
  app.post(`${V}/backupJobs/:job/cancel`, { config: { action: `${RS}/backupJobs/cancelJob/action` } }, async (req, reply) => {
    const api = requireArmApiVersion(req.url);
    const v = await vault(req);
    const id = (req.params as { job: string }).job;
    await svc.cancelJob(v, id);
    const opId = await ops.start('Microsoft.RecoveryServices/vaults/backupJobs/cancelJob/action', `${v.id}/backupJobs/${id}`, async () => {
      for (let i = 0; i < 600; i++) {
        const j = await svc.getJob(id);
        if (!j || j.status !== 'Cancelling') return undefined;
        await new Promise((r) => setTimeout(r, 100));
      }
      return undefined;
    });
    return accepted(reply, { location: link(req, `${v.id}/backupJobs/${id}/operationResults/${opId}`, api) }, 1);
  });

  // ---- pre-validation, backup status -----------------------------------------------------------------------------
  app.post('/subscriptions/:sub/providers/Microsoft.RecoveryServices/locations/:loc/backupPreValidateProtection', { config: { action: 'Microsoft.RecoveryServices/locations/backupPreValidateProtection/action' } }, async (req) => {
    requireArmApiVersion(req.url);
    const { sub } = req.params as { sub: string };
    svc.d.resources.requireSubscription(sub);
    const b = bodyObject(req, '{"resourceType": "VM", "resourceId": "<VM id>", "vaultId": "<vault id>"}');
    const resourceId = optString(b, 'resourceId', 'resourceId');
    const vaultId = optString(b, 'vaultId', 'vaultId');
    if (!resourceId) throw armErrors.invalidContent("'resourceId' is required: the ARM id of the VM.", 'resourceId');
    if (!vaultId) throw armErrors.invalidContent("'vaultId' is required: the ARM id of the Recovery Services vault.", 'vaultId');
    const rt = optString(b, 'resourceType', 'resourceType');
    if (rt && rt.toLowerCase() !== 'vm') throw armErrors.invalidContent(`resourceType '${rt}' is not supported: use 'VM'.`, 'resourceType');
    const m = /^\/subscriptions\/([^/]+)\/resourceGroups\/([^/]+)\/providers\/Microsoft\.RecoveryServices\/vaults\/([^/]+)$/i.exec(vaultId);
    if (!m) throw armErrors.invalidContent(`vaultId '${vaultId}' is not a Recovery Services vault id.`, 'vaultId');
    const v = await svc.requireVault(m[1]!, m[2]!, m[3]!);
    const vmRef = /\/resourceGroups\/([^/]+)\/providers\/Microsoft\.(Classic)?Compute\/virtualMachines\/([^/]+)$/i.exec(resourceId);
    const ref: VmRef | undefined = vmRef ? { resourceGroup: vmRef[1]!, vmName: vmRef[3]!, classic: !!vmRef[2] } : undefined;
    const names = ref ? { containerName: containerName(ref).toLowerCase(), protectedItemName: itemName(ref).toLowerCase() } : {};
    try {
      const dex = isObj(b.properties) && isObj(b.properties.diskExclusionProperties);
      await svc.preflight(v, resourceId, { diskExclusion: dex });
      return { status: 'Succeeded', ...names };
    } catch (e) {
      if (!(e instanceof ArmError)) throw e;
      return { status: 'Failed', errorCode: e.code, errorMessage: e.message, recommendation: e.recommendation ?? '', ...names };
    }
  });
  app.post('/subscriptions/:sub/providers/Microsoft.RecoveryServices/locations/:loc/backupStatus', { config: { action: 'Microsoft.RecoveryServices/locations/backupStatus/action' } }, async (req) => {
    requireArmApiVersion(req.url);
    const { sub } = req.params as { sub: string };
    svc.d.resources.requireSubscription(sub);
    const b = bodyObject(req, '{"resourceType": "VM", "resourceId": "<VM id>"}');
    const resourceId = optString(b, 'resourceId', 'resourceId');
    if (!resourceId) throw armErrors.invalidContent("'resourceId' is required: the ARM id of the VM.", 'resourceId');
    const item = await svc.db.selectFrom('recovery_items').selectAll().where('deferred_delete_at', 'is', null).execute();
    const hit = item.find((i) => i.vm_id.toLowerCase() === resourceId.toLowerCase());
    if (!hit) return { protectionStatus: 'NotProtected' };
    const v = (await svc.vaultByNorm(hit.vault_norm))!;
    const ref = refOfItem(hit);
    return { protectionStatus: hit.policy_name ? 'Protected' : 'NotProtected', vaultId: v.id, fabricName: 'Azure', containerName: containerName(ref), protectedItemName: itemName(ref), policyName: hit.policy_name ?? undefined, registrationStatus: 'Registered' };
  });
}

async function opKind(svc: RecoveryService, opId: string, _resourceId: string | undefined): Promise<string> {
  const job = await svc.db.selectFrom('recovery_jobs').select('operation').where('op_id', '=', opId).executeTakeFirst();
  return job?.operation === 'ConfigureBackup' || job?.operation === 'DisableBackup' || job?.operation === 'Undelete' ? 'protectedItems/write' : 'other';
}
