/**
 * ARM template deployments (`Microsoft.Resources/deployments` at resource-group scope): PUT with a template (inline or
 * `templateLink.uri` to a blob this installation serves) and parameters, then the deployment runs in the background
 * and creates each resource through the server's own ARM routes, as the deploying principal (its token), so every
 * resource gets the same validation and RBAC as a direct call. provisioningState Accepted → Running → Succeeded |
 * Failed with one error detail per failed resource. Incremental mode only.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Kysely } from 'kysely';
import { createHash, randomUUID } from 'node:crypto';
import type { Db, Migration } from '../platform/db/index.js';
import { ArmError, armErrors, type ArmErrorBody } from '../platform/http/errors.js';
import { requireArmApiVersion } from '../platform/http/api-version.js';
import { originOf } from '../platform/http/app.js';
import { paginate } from '../platform/http/paging.js';
import type { AsyncOperations } from '../platform/http/async-ops.js';
import { parseJsonLenient } from '../platform/http/jsonc.js';
import type { ResourceService } from './service.js';
import { evaluate, resourceIdOf, templateError, type EvalContext } from './template.js';

type DeploymentTables = {
  resource_deployments: {
    id_norm: string;
    id: string;
    subscription_id: string;
    resource_group: string;
    name: string;
    state: string;
    props_json: string;
    error_json: string | null;
    op_id: string | null;
    started_at: number;
    ended_at: number | null;
  };
};
type Row = DeploymentTables['resource_deployments'];

export const deploymentMigrations: Migration[] = [
  {
    name: '0202_resources_deployments',
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('resource_deployments')
        .addColumn('id_norm', 'text', (c) => c.primaryKey())
        .addColumn('id', 'text', (c) => c.notNull())
        .addColumn('subscription_id', 'text', (c) => c.notNull())
        .addColumn('resource_group', 'text', (c) => c.notNull())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('props_json', 'text', (c) => c.notNull())
        .addColumn('error_json', 'text')
        .addColumn('op_id', 'text')
        .addColumn('started_at', 'bigint', (c) => c.notNull())
        .addColumn('ended_at', 'bigint')
        .execute();
    },
  },
];

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

interface PlannedResource {
  id: string;
  type: string;
  apiVersion: string;
  body: Obj;
  dependsOn: string[];
}

interface Props {
  mode: string;
  parameters: Record<string, { value: unknown }>;
  templateLink?: { uri: string } | undefined;
  outputResources: { id: string }[];
  outputs: Obj;
  correlationId: string;
  planned: PlannedResource[];
}

const lc = (s: string) => s.toLowerCase();

function view(r: Row) {
  const p = JSON.parse(r.props_json) as Props;
  const end = r.ended_at ?? Date.now();
  const secs = (end - Number(r.started_at)) / 1000;
  return {
    id: r.id,
    name: r.name,
    type: 'Microsoft.Resources/deployments',
    properties: {
      provisioningState: r.state,
      mode: p.mode,
      timestamp: new Date(r.ended_at ?? r.started_at).toISOString(),
      duration: `PT${secs}S`,
      correlationId: p.correlationId,
      parameters: Object.fromEntries(Object.entries(p.parameters).map(([k, v]) => [k, { type: typeof v.value === 'number' ? 'Int' : typeof v.value === 'boolean' ? 'Bool' : typeof v.value === 'object' ? 'Object' : 'String', value: v.value }])),
      ...(p.templateLink ? { templateLink: p.templateLink } : {}),
      outputs: p.outputs,
      outputResources: p.outputResources,
      dependencies: p.planned.filter((x) => x.dependsOn.length).map((x) => ({ id: x.id, resourceType: x.type, resourceName: x.id.split('/').pop(), dependsOn: x.dependsOn.map((d) => ({ id: d })) })),
      ...(r.error_json ? { error: JSON.parse(r.error_json) as ArmErrorBody } : {}),
    },
  };
}

export interface DeploymentRouteDeps {
  db: Db;
  resources: ResourceService;
  ops: AsyncOperations;
  /**
   * A blob URL of this installation (`https://{account}.{blob suffix}:{port}/{c}/{b}` or `…/blob/{account}/{c}/{b}`,
   * with or without a SAS) → its parts; undefined for any other URL. Linked templates are read only through it,
   * in-process: the server never fetches a template from the network (no SSRF).
   */
  parseOwnBlobUrl?: ((uri: string) => { account: string; container: string; blob: string; query: URLSearchParams } | undefined) | undefined;
}

export function registerDeploymentRoutes(app: FastifyInstance, deps: DeploymentRouteDeps): void {
  const db = deps.db.withTables<DeploymentTables>();
  const { resources, ops } = deps;
  const BASE = '/subscriptions/:sub/resourcegroups/:rg/providers/Microsoft.Resources/deployments';
  const D = `${BASE}/:name`;
  const A = 'Microsoft.Resources/deployments';
  type P = { sub: string; rg: string; name: string };
  const idOf = (sub: string, rg: string, name: string) => `/subscriptions/${sub}/resourceGroups/${rg}/providers/Microsoft.Resources/deployments/${name}`;
  const get = (id: string) => db.selectFrom('resource_deployments').selectAll().where('id_norm', '=', lc(id)).executeTakeFirst();

  /** Fetches a linked template from a blob this server serves, with the caller's token (or the URI's SAS). */
  async function fetchLinked(req: FastifyRequest, uri: string): Promise<Obj> {
    const target = 'properties.templateLink.uri';
    const shown = uri.replace(/([?&])sig=[^&]*/, '$1sig=REDACTED');
    try {
      new URL(uri);
    } catch {
      throw armErrors.invalidContent(`'properties.templateLink.uri' '${shown}' is not a URL.`, target);
    }
    const b = deps.parseOwnBlobUrl?.(uri);
    if (!b) {
      throw new ArmError(400, 'InvalidTemplateLink', `The template link '${shown}' is not a blob served by this rsvault ('https://{account}.{blob host suffix}:{port}/{container}/{blob}[?SAS]'); rsvault reads linked templates only from its own storage accounts. Download it and deploy with --template-file.`, { target });
    }
    const sas = b.query.get('sig') ? `?${b.query.toString()}` : '';
    const res = await app.inject({ method: 'GET', url: `/blob/${b.account}/${b.container}/${encodeURIComponent(b.blob)}${sas}`, headers: { host: String(req.headers.host ?? 'localhost'), ...(sas ? {} : { authorization: String(req.headers.authorization ?? '') }) } });
    if (res.statusCode !== 200) {
      let e: ArmErrorBody | undefined;
      try {
        e = (res.json() as { error?: ArmErrorBody }).error;
      } catch {
        e = undefined;
      }
      throw new ArmError(400, 'InvalidTemplateLink', `The template link '${shown}' could not be read: ${e?.code ?? res.statusCode} ${e?.message ?? ''}`.trim(), { target });
    }
    try {
      const t = parseJsonLenient(res.body);
      if (!isObj(t)) throw new Error('not an object');
      return t;
    } catch (e) {
      throw templateError(`the linked template is not a JSON object (${(e as Error).message}).`, target);
    }
  }

  /** Evaluates parameters, variables and resources; every error here is a 400 before anything is created. */
  function plan(sub: string, rg: { id: string; name: string; location: string }, name: string, template: Obj, given: Obj): { parameters: Record<string, { value: unknown }>; planned: PlannedResource[] } {
    const decl = template.parameters ?? {};
    if (!isObj(decl)) throw templateError("'parameters' must be an object.", 'properties.template.parameters');
    for (const k of Object.keys(given)) if (!(k in decl)) throw templateError(`the parameter '${k}' is not declared in the template (declared: ${Object.keys(decl).join(', ') || 'none'}).`, `properties.parameters.${k}`);
    const ctx: EvalContext = { subscriptionId: sub, resourceGroup: rg, deploymentName: name, parameters: {}, variables: {} };
    const parameters: Record<string, { value: unknown }> = {};
    for (const [k, d] of Object.entries(decl)) {
      if (!isObj(d)) throw templateError(`the parameter '${k}' must be declared as an object with a 'type'.`, `properties.template.parameters.${k}`);
      const g = given[k];
      let v: unknown;
      if (g !== undefined) {
        if (!isObj(g) || !('value' in g)) throw armErrors.invalidContent(`The parameter '${k}' must be given as {"value": ...}.`, `properties.parameters.${k}`);
        v = g.value;
      } else if ('defaultValue' in d) v = evaluate(d.defaultValue, ctx);
      else throw templateError(`the value for the template parameter '${k}' is not provided.`, `properties.parameters.${k}`);
      const type = lc(String(d.type ?? 'string'));
      const ok = type === 'string' || type === 'securestring' ? typeof v === 'string' : type === 'int' ? Number.isInteger(v) : type === 'bool' ? typeof v === 'boolean' : type === 'array' ? Array.isArray(v) : isObj(v);
      if (!ok) throw templateError(`the value of parameter '${k}' is not of type '${String(d.type)}'.`, `properties.parameters.${k}`);
      if (Array.isArray(d.allowedValues) && !d.allowedValues.includes(v)) throw templateError(`the value of parameter '${k}' is not one of the allowed values ${JSON.stringify(d.allowedValues)}.`, `properties.parameters.${k}`);
      ctx.parameters[k] = v;
      parameters[k] = { value: v };
    }
    const vars = template.variables ?? {};
    if (!isObj(vars)) throw templateError("'variables' must be an object.", 'properties.template.variables');
    for (const [k, v] of Object.entries(vars)) ctx.variables[k] = evaluate(v, ctx);
    const list = template.resources;
    if (!Array.isArray(list)) throw templateError("'resources' must be an array.", 'properties.template.resources');
    const planned: PlannedResource[] = list.map((raw, i) => {
      if (!isObj(raw)) throw templateError(`resources[${i}] must be an object.`, `properties.template.resources[${i}]`);
      const r = evaluate(raw, ctx) as Obj;
      const type = r.type;
      const rname = r.name;
      const apiVersion = r.apiVersion;
      if (typeof type !== 'string' || typeof rname !== 'string' || typeof apiVersion !== 'string') throw templateError(`resources[${i}] needs string 'type', 'name' and 'apiVersion'.`, `properties.template.resources[${i}]`);
      const id = resourceIdOf(sub, rg.name, type, rname.split('/'));
      const body: Obj = {};
      for (const k of ['location', 'tags', 'sku', 'kind', 'properties', 'identity', 'zones', 'plan']) if (r[k] !== undefined) body[k] = r[k];
      const dependsOn = Array.isArray(r.dependsOn) ? r.dependsOn.map(String) : [];
      return { id, type, apiVersion, body, dependsOn };
    });
    // dependsOn: a full id, or a bare name / type+name of a resource of this template.
    for (const r of planned) {
      r.dependsOn = r.dependsOn.map((d) => {
        const hit = planned.find((x) => lc(x.id) === lc(d) || lc(x.id).endsWith('/' + lc(d)));
        if (!hit) throw templateError(`the resource '${r.id}' depends on '${d}', which is not defined in the template.`, 'properties.template.resources');
        return hit.id;
      });
    }
    return { parameters, planned };
  }

  async function run(req: FastifyRequest, id: string, planned: PlannedResource[]): Promise<{ ok: string[]; errors: ArmErrorBody[] }> {
    const headers = { host: String(req.headers.host ?? 'localhost'), authorization: String(req.headers.authorization ?? ''), 'content-type': 'application/json' };
    const done = new Set<string>();
    const failed = new Set<string>();
    const errors: ArmErrorBody[] = [];
    const ok: string[] = [];
    const pending = [...planned];
    while (pending.length) {
      const idx = pending.findIndex((r) => r.dependsOn.every((d) => done.has(lc(d)) || failed.has(lc(d))));
      if (idx < 0) {
        errors.push({ code: 'InvalidTemplate', message: `Circular dependency between resources: ${pending.map((r) => r.id).join(', ')}.` });
        break;
      }
      const r = pending.splice(idx, 1)[0]!;
      const blocked = r.dependsOn.find((d) => failed.has(lc(d)));
      if (blocked) {
        failed.add(lc(r.id));
        errors.push({ code: 'DependencyFailed', message: `The resource '${r.id}' was not deployed because '${blocked}' failed.`, target: r.id });
        continue;
      }
      await db.updateTable('resource_deployments').set({ state: 'Running' }).where('id_norm', '=', lc(id)).execute();
      let res = await app.inject({ method: 'PUT', url: `${r.id}?api-version=${encodeURIComponent(r.apiVersion)}`, headers, payload: JSON.stringify(r.body) });
      // Long-running PUTs: follow Azure-AsyncOperation until the operation ends.
      const asyncUrl = res.headers['azure-asyncoperation'];
      if (res.statusCode < 300 && asyncUrl) {
        const u = new URL(String(asyncUrl));
        for (let i = 0; i < 36_000; i++) {
          const st = await app.inject({ method: 'GET', url: u.pathname + u.search, headers });
          const b = st.json() as { status?: string; error?: ArmErrorBody };
          if (st.statusCode >= 400) {
            res = st;
            break;
          }
          if (b.status && !['InProgress', 'Running', 'Accepted'].includes(b.status)) {
            if (b.status !== 'Succeeded') {
              errors.push({ code: b.error?.code ?? 'ResourceDeploymentFailure', message: b.error?.message ?? `The resource operation completed with terminal provisioning state '${b.status}'.`, target: r.id });
              failed.add(lc(r.id));
            }
            break;
          }
          await new Promise((x) => setTimeout(x, 200));
        }
        if (failed.has(lc(r.id))) continue;
      }
      if (res.statusCode >= 400) {
        let e: ArmErrorBody | undefined;
        try {
          e = (res.json() as { error?: ArmErrorBody }).error;
        } catch {
          e = undefined;
        }
        errors.push({ code: e?.code ?? `Http${res.statusCode}`, message: e?.message ?? res.body.slice(0, 500), target: r.id, ...(e?.additionalInfo ? { additionalInfo: e.additionalInfo } : {}) });
        failed.add(lc(r.id));
        continue;
      }
      done.add(lc(r.id));
      ok.push(r.id);
    }
    return { ok, errors };
  }

  /** Checks the request and the template and plans the resources: every error is a 400 before anything is created. */
  async function prepare(req: FastifyRequest) {
    const p = req.params as P;
    const g = await resources.requireGroup(p.sub, p.rg);
    if (!/^[-\w._()]{1,64}$/.test(p.name)) throw armErrors.invalidName('deployment', p.name, 'it must be 1-64 characters: letters, digits, and - _ . ( ).');
    const b = req.body;
    if (!isObj(b) || !isObj(b.properties)) throw armErrors.invalidContent('The request body must be {"properties": {"mode": "Incremental", "template": {...} | "templateLink": {"uri": "..."}, "parameters": {...}}}.', 'properties');
    const props = b.properties;
    const mode = typeof props.mode === 'string' ? props.mode : 'Incremental';
    if (lc(mode) !== 'incremental') throw armErrors.invalidContent(`Deployment mode '${mode}' is not supported: rsvault deploys in 'Incremental' mode only.`, 'properties.mode');
    if ((props.template === undefined) === (props.templateLink === undefined)) throw armErrors.invalidContent("Give exactly one of 'properties.template' and 'properties.templateLink'.", 'properties.template');
    if (props.parameters !== undefined && props.parameters !== null && !isObj(props.parameters)) throw armErrors.invalidContent("'properties.parameters' must be an object of {\"name\": {\"value\": ...}}.", 'properties.parameters');
    if (props.parametersLink !== undefined) throw armErrors.invalidContent("'properties.parametersLink' is not supported: send the parameters inline.", 'properties.parametersLink');
    let template: Obj;
    let templateLink: { uri: string } | undefined;
    if (props.template !== undefined) {
      if (!isObj(props.template)) throw armErrors.invalidContent("'properties.template' must be a JSON object (the template).", 'properties.template');
      template = props.template;
    } else {
      const tl = props.templateLink;
      if (!isObj(tl) || typeof tl.uri !== 'string') throw armErrors.invalidContent("'properties.templateLink' must be {\"uri\": \"...\"}.", 'properties.templateLink');
      templateLink = { uri: tl.uri.replace(/([?&])sig=[^&]*/, '$1sig=REDACTED') };
      template = await fetchLinked(req, tl.uri);
    }
    const id = idOf(p.sub, g.name, p.name);
    const { parameters, planned } = plan(p.sub, { id: g.id, name: g.name, location: g.location }, p.name, template, (props.parameters as Obj | undefined) ?? {});
    return { p, g, id, template, templateLink, parameters, planned };
  }

  app.put(D, { config: { action: `${A}/write` } }, async (req, reply) => {
    const api = requireArmApiVersion(req.url);
    const { p, g, id, templateLink, parameters, planned } = await prepare(req);
    const existing = await get(id);
    if (existing && ['Accepted', 'Running'].includes(existing.state)) throw new ArmError(409, 'DeploymentActive', `The deployment '${p.name}' is still ${existing.state}; wait for it to finish.`);
    const pr: Props = { mode: 'Incremental', parameters, templateLink, outputResources: [], outputs: {}, correlationId: randomUUID(), planned };
    const now = Date.now();
    const row: Row = { id_norm: lc(id), id, subscription_id: p.sub, resource_group: lc(g.name), name: p.name, state: 'Accepted', props_json: JSON.stringify(pr), error_json: null, op_id: null, started_at: now, ended_at: null };
    await db.deleteFrom('resource_deployments').where('id_norm', '=', lc(id)).execute();
    await db.insertInto('resource_deployments').values(row).execute();
    const opId = await ops.start(`${A}/write`, id, async () => {
      const { ok, errors } = await run(req, id, planned);
      const cur = JSON.parse((await get(id))!.props_json) as Props;
      cur.outputResources = ok.map((x) => ({ id: x }));
      const error: ArmErrorBody | undefined = errors.length
        ? { code: 'DeploymentFailed', message: 'At least one resource deployment operation failed. Please list deployment operations for details.', details: errors }
        : undefined;
      await db.updateTable('resource_deployments').set({ state: error ? 'Failed' : 'Succeeded', props_json: JSON.stringify(cur), error_json: error ? JSON.stringify(error) : null, ended_at: Date.now() }).where('id_norm', '=', lc(id)).execute();
      if (error) throw new ArmError(400, error.code, error.message, { details: errors });
      return undefined;
    });
    await db.updateTable('resource_deployments').set({ op_id: opId }).where('id_norm', '=', lc(id)).execute();
    void reply.header('azure-asyncoperation', `${originOf(req)}${id}/operationStatuses/${opId}?api-version=${encodeURIComponent(api)}`);
    void reply.header('retry-after', '1'); // pollers (az's: 30 s) otherwise wait their default between polls
    return reply.code(existing ? 200 : 201).send(view((await get(id))!));
  });
  // Validate (az deployment group validate; az deployment group create validates first): the same checks and plan as
  // the PUT, nothing created or recorded. 200 + DeploymentValidateResult, or 400 + {error} (InvalidTemplate, ...).
  app.post(`${D}/validate`, { config: { action: `${A}/validate/action` } }, async (req) => {
    requireArmApiVersion(req.url);
    const { p, id, template, templateLink, parameters, planned } = await prepare(req);
    const now = new Date().toISOString();
    const typeOf = (x: unknown) => (typeof x === 'number' ? 'Int' : typeof x === 'boolean' ? 'Bool' : Array.isArray(x) ? 'Array' : typeof x === 'object' ? 'Object' : 'String');
    return {
      id,
      name: p.name,
      type: 'Microsoft.Resources/deployments',
      properties: {
        templateHash: BigInt('0x' + createHash('sha256').update(JSON.stringify(template)).digest('hex').slice(0, 15)).toString(),
        parameters: Object.fromEntries(Object.entries(parameters).map(([k, v]) => [k, { type: typeOf(v.value), value: v.value }])),
        mode: 'Incremental',
        provisioningState: 'Succeeded',
        timestamp: now,
        duration: 'PT0S',
        correlationId: randomUUID(),
        ...(templateLink ? { templateLink } : {}),
        providers: [...new Set(planned.map((r) => r.type.split('/')[0]!))].map((ns) => ({ namespace: ns, resourceTypes: [...new Set(planned.filter((r) => r.type.startsWith(ns + '/')).map((r) => r.type.slice(ns.length + 1)))].map((resourceType) => ({ resourceType, locations: [] })) })),
        dependencies: planned.filter((x) => x.dependsOn.length).map((x) => ({ id: x.id, resourceType: x.type, resourceName: x.id.split('/').pop(), dependsOn: x.dependsOn.map((d) => ({ id: d, resourceType: planned.find((r) => r.id === d)?.type, resourceName: d.split('/').pop() })) })),
        validatedResources: planned.map((r) => ({ id: r.id })),
      },
    };
  });
  // Deployments at other scopes (tenant, management group, subscription): a clear refusal instead of a 404.
  for (const scope of ['/providers/Microsoft.Resources/deployments/:name', '/subscriptions/:sub/providers/Microsoft.Resources/deployments/:name', '/providers/Microsoft.Management/managementGroups/:mg/providers/Microsoft.Resources/deployments/:name']) {
    for (const suffix of ['', '/validate']) {
      // Open to any signed-in caller: they only refuse (no action to authorize).
      app.route({ method: suffix ? 'POST' : 'PUT', url: scope + suffix, config: { open: 'authenticated' }, handler: async () => {
        throw new ArmError(400, 'UnsupportedDeploymentScope', 'rsvault deploys templates at resource-group scope only.', { recommendation: 'Deploy into a resource group: az deployment group create|validate -g <group> --template-file <file> (PUT/POST /subscriptions/{sub}/resourcegroups/{rg}/providers/Microsoft.Resources/deployments/{name}[/validate]).' });
      } });
    }
  }
  app.get(`${D}/operationStatuses/:op`, { config: { action: `${A}/read` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    const p = req.params as P & { op: string };
    const op = await ops.require(p.op);
    const status = op.status === 'InProgress' ? 'Running' : op.status;
    if (status === 'Running') void reply.header('retry-after', '1');
    return { status, ...(op.error ? { error: op.error } : {}) };
  });
  app.get(D, { config: { action: `${A}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const p = req.params as P;
    const g = await resources.requireGroup(p.sub, p.rg);
    const r = await get(idOf(p.sub, g.name, p.name));
    if (!r) throw new ArmError(404, 'DeploymentNotFound', `Deployment '${p.name}' could not be found.`, { recommendation: `List deployments: rsvault deployment group list -g ${g.name}` });
    return view(r);
  });
  app.delete(D, { config: { action: `${A}/delete` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    const p = req.params as P;
    const g = await resources.requireGroup(p.sub, p.rg);
    const r = await get(idOf(p.sub, g.name, p.name));
    if (!r) return reply.code(204).send();
    if (['Accepted', 'Running'].includes(r.state)) throw new ArmError(409, 'DeploymentActive', `The deployment '${p.name}' is still ${r.state}.`);
    await db.deleteFrom('resource_deployments').where('id_norm', '=', r.id_norm).execute();
    return reply.code(200).send();
  });
  app.get(BASE, { config: { action: `${A}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const p = req.params as P;
    const g = await resources.requireGroup(p.sub, p.rg);
    const rows = await db.selectFrom('resource_deployments').selectAll().where('subscription_id', '=', p.sub).where('resource_group', '=', lc(g.name)).orderBy('started_at', 'desc').execute();
    return paginate(rows.map(view), new URL(req.url, originOf(req)));
  });
}

/** Deployments left Accepted/Running by a previous process fail (their operation rows are failed by AsyncOperations). */
export async function failInterruptedDeployments(dbIn: Db): Promise<void> {
  const db = dbIn.withTables<DeploymentTables>();
  await db
    .updateTable('resource_deployments')
    .set({ state: 'Failed', ended_at: Date.now(), error_json: JSON.stringify({ code: 'DeploymentInterrupted', message: 'The server restarted while the deployment was running; redeploy (incremental deployments are idempotent).' }) })
    .where('state', 'in', ['Accepted', 'Running'])
    .execute();
}
