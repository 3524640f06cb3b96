/** ARM surface of Microsoft.Resources: resource groups, generic resource listing, operation status. */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { ArmError } from '../platform/http/errors.js';
import { authorizationFailed, type Caller } from '../platform/auth/index.js';
import { parseResourceId } from './model.js';
import { requireArmApiVersion } from '../platform/http/api-version.js';
import { originOf } from '../platform/http/app.js';
import { paginate } from '../platform/http/paging.js';
import { accepted, retryAfterWhileRunning, type AsyncOperations } from '../platform/http/async-ops.js';
import type { ResourceGroup, ResourceService } from './service.js';

const Tags = Type.Record(Type.String({ maxLength: 512 }), Type.String({ maxLength: 256 }));
const GroupBody = Type.Object(
  {
    location: Type.String({ minLength: 1, maxLength: 64 }),
    tags: Type.Optional(Tags),
    managedBy: Type.Optional(Type.String()),
    properties: Type.Optional(Type.Object({}, { additionalProperties: true })),
    id: Type.Optional(Type.String()),
    name: Type.Optional(Type.String()),
    type: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
);
const GroupPatch = Type.Object({ tags: Type.Optional(Tags), managedBy: Type.Optional(Type.String()), properties: Type.Optional(Type.Object({}, { additionalProperties: true })) }, { additionalProperties: false });

const view = (g: ResourceGroup) => ({
  id: g.id,
  name: g.name,
  type: 'Microsoft.Resources/resourceGroups',
  location: g.location,
  tags: g.tags,
  ...(g.managedBy ? { managedBy: g.managedBy } : {}),
  properties: { provisioningState: g.provisioningState },
});

export function registerResourceRoutes(app: FastifyInstance, deps: { resources: ResourceService; ops: AsyncOperations; checkAccess?: (caller: Caller, scope: string, action: string) => Promise<boolean> }): void {
  const { resources, ops } = deps;
  const RG = '/subscriptions/:sub/resourcegroups/:rg';
  const A = 'Microsoft.Resources/subscriptions/resourceGroups';
  type P = { sub: string; rg: string };

  app.put(RG, { schema: { body: GroupBody }, config: { action: `${A}/write` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    const { sub, rg } = req.params as P;
    const b = req.body as Static<typeof GroupBody>;
    const { group, created } = await resources.createOrUpdateGroup(sub, rg, { location: b.location, tags: b.tags, managedBy: b.managedBy });
    return reply.code(created ? 201 : 200).send(view(group));
  });
  app.patch(RG, { schema: { body: GroupPatch }, config: { action: `${A}/write` } }, async (req) => {
    requireArmApiVersion(req.url);
    const { sub, rg } = req.params as P;
    const g = await resources.requireGroup(sub, rg);
    const b = req.body as Static<typeof GroupPatch>;
    return view((await resources.createOrUpdateGroup(sub, rg, { location: g.location, tags: b.tags ?? g.tags, managedBy: b.managedBy })).group);
  });
  app.get(RG, { config: { action: `${A}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const { sub, rg } = req.params as P;
    return view(await resources.requireGroup(sub, rg));
  });
  app.head(RG, { config: { action: `${A}/read` } }, async (req, reply) => {
    const { sub, rg } = req.params as P;
    resources.requireSubscription(sub);
    return reply.code((await resources.getGroup(sub, rg)) ? 204 : 404).send();
  });
  app.delete(RG, { config: { action: `${A}/delete` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    const { sub, rg } = req.params as P;
    resources.requireSubscription(sub);
    const opId = await resources.beginDeleteGroup(sub, rg);
    if (!opId) return reply.code(204).send();
    const loc = `${originOf(req)}/subscriptions/${sub}/operationresults/${opId}?api-version=2021-04-01`;
    return accepted(reply, { location: loc }, 1);
  });
  app.get('/subscriptions/:sub/resourcegroups', { config: { action: `${A}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const { sub } = req.params as { sub: string };
    return paginate((await resources.listGroups(sub)).map(view), new URL(req.url, originOf(req)));
  });

  const listResources = async (req: FastifyRequest) => {
    requireArmApiVersion(req.url);
    const { sub, rg } = req.params as { sub: string; rg?: string };
    resources.requireSubscription(sub);
    if (rg) await resources.requireGroup(sub, rg);
    const filter = new URL(req.url, 'https://x').searchParams.get('$filter') ?? '';
    let type: string | undefined;
    if (filter) {
      const m = /^\s*resourceType\s+eq\s+'([^']+)'\s*$/i.exec(filter);
      if (!m) throw new ArmError(400, 'InvalidFilterInQueryString', `Invalid $filter '${filter}'. Supported: resourceType eq '<Provider/type>'.`);
      type = m[1];
    }
    const list = await resources.listIndexed(sub, { resourceGroup: rg, type });
    return paginate(
      list.map((r) => ({ id: r.id, name: r.name, type: r.type, location: r.location, tags: r.tags ?? {} })),
      new URL(req.url, originOf(req)),
    );
  };
  app.get('/subscriptions/:sub/resources', { config: { action: 'Microsoft.Resources/subscriptions/resources/read' } }, listResources);
  app.get(`${RG}/resources`, { config: { action: 'Microsoft.Resources/subscriptions/resourceGroups/resources/read' } }, listResources);

  // Location-style status of a resource-group delete (and other subscription-level operations): 202 while running,
  // 200/204 when done, the error envelope when failed.
  // Who may poll: a reader of the subscription (as before), or a reader of the resource the operation is about — so a
  // principal whose role is on a resource group can follow the operations it starts there (disk PUT, VM actions, ADE).
  const requireOpReader = async (req: FastifyRequest, sub: string, resourceId: string | undefined) => {
    const caller = req.caller!;
    const subScope = `/subscriptions/${sub}`;
    const subAction = 'Microsoft.Resources/subscriptions/read';
    if (!deps.checkAccess || (await deps.checkAccess(caller, subScope, subAction))) return;
    const r = resourceId ? parseResourceId(resourceId) : undefined;
    if (r && r.subscriptionId.toLowerCase() === sub.toLowerCase()) {
      const action = r.provider && r.type ? `${r.provider}/${r.type}/read` : r.resourceGroup ? 'Microsoft.Resources/subscriptions/resourceGroups/read' : subAction;
      if (await deps.checkAccess(caller, resourceId!, action)) return;
    }
    throw authorizationFailed(caller, subAction, subScope);
  };
  app.get('/subscriptions/:sub/operationresults/:op', { config: deps.checkAccess ? { plane: 'arm', open: 'authenticated' } : { action: 'Microsoft.Resources/subscriptions/read' } }, async (req, reply) => {
    const { sub, op } = req.params as { sub: string; op: string };
    resources.requireSubscription(sub);
    const v = await ops.require(op);
    await requireOpReader(req, sub, v.resourceId);
    if (v.status === 'InProgress') return accepted(reply, { location: `${originOf(req)}${req.url}` }, 1);
    if (v.status === 'Failed') {
      const e = v.error ?? { code: 'OperationFailed', message: 'The operation failed.' };
      return reply.code(e.code === 'AuthorizationFailed' ? 403 : 400).send({ error: e });
    }
    return v.result === undefined ? reply.code(204).send() : reply.code(200).send(v.result);
  });
  // Azure-AsyncOperation-style status: always 200 with the status.
  app.get('/subscriptions/:sub/providers/:ns/locations/:loc/operationStatuses/:op', { config: deps.checkAccess ? { plane: 'arm', open: 'authenticated' } : { action: 'Microsoft.Resources/subscriptions/read' } }, async (req, reply) => {
    const { sub, op } = req.params as { sub: string; op: string };
    resources.requireSubscription(sub);
    const v = await ops.require(op);
    await requireOpReader(req, sub, v.resourceId);
    retryAfterWhileRunning(reply, v.status);
    return { id: `${req.url.replace(/\?.*$/, '')}`, name: v.name, status: v.status, startTime: v.startTime, ...(v.endTime ? { endTime: v.endTime } : {}), ...(v.error ? { error: v.error } : {}) };
  });
}
