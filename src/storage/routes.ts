/**
 * ARM surface of Microsoft.Storage/storageAccounts (create/get/list/delete, listServiceSas) and the blob read
 * endpoint `GET /blob/{account}/{container}/{blob}`: a bearer token of a principal that may read the account
 * (RBAC), or a service SAS (`?sv&sr&sp&se&sig`) handed out by listServiceSas.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { ArmError, armErrors } from '../platform/http/errors.js';
import { requireArmApiVersion } from '../platform/http/api-version.js';
import { parseByteRange, unsatisfiableRange } from '../platform/http/range.js';
import { originOf } from '../platform/http/app.js';
import { paginate } from '../platform/http/paging.js';
import type { Caller } from '../platform/auth/index.js';
import { accountIdOf, STORAGE_TYPE, storageErrors } from './model.js';
import { BLOB_READ_ACTION, type StorageAccount, type StorageService } from './service.js';

export interface StorageRouteDeps {
  storage: StorageService;
  /** Verifies an ARM bearer token (throws the ARM 401). */
  verifyBearer(token: string): Promise<Caller>;
  checkAccess(caller: Caller, scope: string, action: string): Promise<boolean>;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

export function accountView(a: StorageAccount, origin: string, blobEndpoint = `${origin}/blob/${a.name}/`) {
  return {
    id: a.id,
    name: a.name,
    type: STORAGE_TYPE,
    location: a.location,
    tags: a.tags,
    sku: a.sku,
    kind: a.kind,
    properties: {
      provisioningState: 'Succeeded',
      creationTime: new Date(a.createdAt).toISOString(),
      primaryLocation: a.location,
      statusOfPrimary: 'available',
      primaryEndpoints: { blob: blobEndpoint },
      allowSharedKeyAccess: true,
      /** rsvault: the account holds at most this many bytes (simulates a full target); absent = unlimited. */
      ...(a.quotaBytes !== undefined ? { quotaBytes: a.quotaBytes } : {}),
    },
  };
}

export function registerStorageRoutes(app: FastifyInstance, deps: StorageRouteDeps): void {
  const { storage } = deps;
  const RG = '/subscriptions/:sub/resourceGroups/:rg/providers/Microsoft.Storage/storageAccounts';
  const A = `${RG}/:name`;
  const S = 'Microsoft.Storage/storageAccounts';
  type P = { sub: string; rg: string; name: string };
  const urlOf = (req: FastifyRequest) => new URL(req.url, originOf(req));
  const view = (a: StorageAccount, req: FastifyRequest) => accountView(a, originOf(req), storage.blobEndpoint(originOf(req), a.name));

  app.put(A, { config: { action: `${S}/write` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    const p = req.params as P;
    const b = req.body;
    if (!isObj(b)) throw armErrors.invalidContent('The request body must be a JSON object: {"location": "...", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}.');
    if (typeof b.location !== 'string' || !b.location) throw armErrors.invalidContent("The request content was invalid: 'location' is required.", 'location');
    if (b.sku !== undefined && !isObj(b.sku)) throw armErrors.invalidContent("'sku' must be an object such as {\"name\":\"Standard_LRS\"}.", 'sku');
    if (b.tags !== undefined && (!isObj(b.tags) || Object.values(b.tags).some((x) => typeof x !== 'string'))) throw armErrors.invalidContent("'tags' must be an object of string values.", 'tags');
    const props = b.properties;
    if (props !== undefined && props !== null && !isObj(props)) throw armErrors.invalidContent("'properties' must be an object.", 'properties');
    const quota = isObj(props) ? props.quotaBytes : undefined;
    if (quota !== undefined && quota !== null && typeof quota !== 'number') throw armErrors.invalidContent("'properties.quotaBytes' must be a number of bytes (or null).", 'properties.quotaBytes');
    if (b.kind !== undefined && typeof b.kind !== 'string') throw armErrors.invalidContent("'kind' must be a string.", 'kind');
    const { account } = await storage.createOrUpdateAccount(p.sub, p.rg, p.name, {
      location: b.location, tags: b.tags as Record<string, string> | undefined, sku: b.sku as { name?: string } | undefined, kind: b.kind as string | undefined,
      quotaBytes: quota as number | null | undefined,
    });
    // StorageAccounts_Create documents 200 (the account) and 202 (accepted, poll Location), never 201: the account is
    // complete when the PUT returns, so 200 with its properties.
    return reply.code(200).send(view(account, req));
  });
  app.get(A, { config: { action: `${S}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const p = req.params as P;
    return view(await storage.requireAccount(p.sub, p.rg, p.name), req);
  });
  app.delete(A, { config: { action: `${S}/delete` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    const p = req.params as P;
    await storage.requireAccount(p.sub, p.rg, p.name).catch((e: unknown) => {
      if (e instanceof ArmError && e.code === 'ResourceNotFound') return undefined;
      throw e;
    });
    const existed = await storage.deleteAccountById(accountIdOf(p.sub, p.rg, p.name));
    return reply.code(existed ? 200 : 204).send();
  });
  app.get(RG, { config: { action: `${S}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const p = req.params as P;
    return paginate((await storage.listAccounts(p.sub, p.rg)).map((a) => view(a, req)), urlOf(req));
  });
  app.get('/subscriptions/:sub/providers/Microsoft.Storage/storageAccounts', { config: { action: `${S}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const p = req.params as P;
    return paginate((await storage.listAccounts(p.sub)).map((a) => view(a, req)), urlOf(req));
  });
  // The account keys (Shared Key auth and SAS signing on the blob plane), as Azure lists them.
  app.post(`${A}/listKeys`, { config: { action: `${S}/listkeys/action` } }, async (req) => {
    requireArmApiVersion(req.url);
    const p = req.params as P;
    const a = await storage.requireAccount(p.sub, p.rg, p.name);
    const created = new Date(a.createdAt).toISOString();
    return { keys: (await storage.accountKeys(a.name)).map((k, i) => ({ creationTime: created, keyName: `key${i + 1}`, value: k.toString('base64'), permissions: 'FULL' })) };
  });
  // Azure's service SAS: {canonicalizedResource: "/blob/{account}/{container}/{blob}", signedPermission: "r", signedExpiry}.
  app.post(`${A}/listServiceSas`, { config: { action: `${S}/listServiceSas/action` } }, async (req) => {
    requireArmApiVersion(req.url);
    const p = req.params as P;
    const a = await storage.requireAccount(p.sub, p.rg, p.name);
    const b = req.body;
    if (!isObj(b)) throw armErrors.invalidContent('The request body must be {"canonicalizedResource": "/blob/{account}/{container}/{blob}", "signedResource": "b", "signedPermission": "r", "signedExpiry": "<ISO time>"}.');
    const res = typeof b.canonicalizedResource === 'string' ? /^\/blob\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(b.canonicalizedResource) : null;
    if (!res || res[1]!.toLowerCase() !== a.name) throw armErrors.invalidContent(`'canonicalizedResource' must be '/blob/${a.name}/{container}/{blob}'.`, 'canonicalizedResource');
    const sp = typeof b.signedPermission === 'string' ? b.signedPermission : 'r';
    if (sp !== 'r') throw armErrors.invalidContent("Only read SAS ('signedPermission': 'r') are issued.", 'signedPermission');
    const exp = typeof b.signedExpiry === 'string' ? Date.parse(b.signedExpiry) : NaN;
    if (Number.isNaN(exp) || exp <= Date.now() || exp > Date.now() + 7 * 86_400_000) throw armErrors.invalidContent("'signedExpiry' must be a date-time in the next 7 days.", 'signedExpiry');
    const blob = decodeURIComponent(res[3]!);
    storage.blobPath(a.name, res[2]!, blob); // validates names
    return { serviceSasToken: await storage.blobSas(a.name, res[2]!, blob, Math.ceil((exp - Date.now()) / 1000)) };
  });

  // ---- blob data ----
  app.get('/blob/:account/:container/:blob', { config: { plane: 'public' } }, async (req, reply) => {
    const p = req.params as { account: string; container: string; blob: string };
    const account = await storage.getAccountByName(p.account);
    const q = new URL(req.url, 'https://x').searchParams;
    if (q.get('sig')) {
      if (!account) throw storageErrors.blobNotFound(p.account, p.container, p.blob);
      await storage.checkSas(account.name, p.container, p.blob, q);
    } else {
      const h = req.headers.authorization;
      const m = h ? /^Bearer\s+(\S+)$/i.exec(h) : null;
      if (!m) throw new ArmError(401, 'NoAuthenticationInformation', 'Server failed to authenticate the request: send a bearer token of a principal that can read the storage account, or use a SAS URL.', { headers: { 'www-authenticate': 'Bearer' } });
      const caller = await deps.verifyBearer(m[1]!);
      const scope = account?.id ?? `/blob/${p.account}`;
      const action = BLOB_READ_ACTION;
      if (!account || !(await deps.checkAccess(caller, scope, action))) {
        if (!account) throw storageErrors.blobNotFound(p.account, p.container, p.blob);
        throw new ArmError(403, 'AuthorizationPermissionMismatch', `The client '${caller.appId ?? caller.objectId}' is not authorized to read blobs of storage account '${account.name}' (action '${action}').`, {
          recommendation: `Grant a role on the account (e.g. Reader or Contributor): rsvault role assignment create --assignee ${caller.appId ?? caller.objectId} --role Contributor --scope ${account.id}`,
        });
      }
    }
    let file: string;
    try {
      file = storage.blobPath(account!.name, p.container, p.blob);
    } catch {
      throw storageErrors.blobNotFound(p.account, p.container, p.blob);
    }
    const st = await stat(file).catch(() => undefined);
    if (!st?.isFile()) throw storageErrors.blobNotFound(p.account, p.container, p.blob);
    const type = p.blob.endsWith('.json') ? 'application/json' : 'application/octet-stream';
    const range = req.headers['x-ms-range'] ?? req.headers.range;
    const r = parseByteRange(range, st.size);
    if (r === 'unsatisfiable') {
      const u = unsatisfiableRange(st.size, range!);
      return reply.code(u.status).headers(u.headers).send(u.body);
    }
    void reply.header('accept-ranges', 'bytes');
    if (r) void reply.code(206).header('content-range', `bytes ${r.start}-${r.end}/${st.size}`);
    return reply.header('content-type', type).header('content-length', String(r ? r.end - r.start + 1 : st.size)).header('x-ms-blob-type', 'BlockBlob').send(createReadStream(file, r ?? {}));
  });
}
