/**
 * Identity HTTP surface: OAuth2 token endpoints (AAD v2 and ADFS styles), OIDC discovery, JWKS, Graph-lite,
 * subscriptions/tenants, cloud metadata, and Microsoft.Authorization role assignments/definitions.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { randomUUID } from 'node:crypto';
import { ArmError, HttpError } from '../platform/http/errors.js';
import { originOf, type RouteConfig } from '../platform/http/app.js';
import { paginate } from '../platform/http/paging.js';
import { providerInfo, requireArmApiVersion, type ProviderInfo } from '../platform/http/api-version.js';
import { DEFAULT_THROTTLE, FailureThrottle, rateLimitConfig, type ThrottleSettings } from '../platform/http/throttle.js';
import rateLimit from '@fastify/rate-limit';
import type { TokenService, Plane } from '../platform/auth/index.js';
import { authorizationFailed, normAud } from '../platform/auth/index.js';
import { BUILT_IN_ROLES, findRole, type Principal, type RoleAssignment, type RoleDefinition } from './model.js';
import { graphNotFound, type IdentityService } from './service.js';

export interface IdentityRouteDeps {
  identity: IdentityService;
  tokens: TokenService;
  /** Token endpoint throttling (default DEFAULT_THROTTLE). */
  throttle?: ThrottleSettings | undefined;
}

/** Errors of the token endpoint, in Azure AD's shape. */
export class AadError extends HttpError {
  constructor(status: number, code: string, readonly aadsts: number, message: string, headers?: Record<string, string>) {
    super(status, code, message, headers);
  }
  toBody() {
    const now = new Date().toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
    return {
      error: this.code,
      error_description: `AADSTS${this.aadsts}: ${this.message}\r\nTrace ID: ${randomUUID()}\r\nCorrelation ID: ${randomUUID()}\r\nTimestamp: ${now}`,
      error_codes: [this.aadsts],
      timestamp: now,
      trace_id: randomUUID(),
      correlation_id: randomUUID(),
    };
  }
}

/** The form fields of a token request (parsed from application/x-www-form-urlencoded; others are ignored). */
type TokenFormT = {
  grant_type?: string;
  client_id?: string;
  client_secret?: string;
  scope?: string;
  resource?: string;
  username?: string;
  password?: string;
};

/** `https://management.core.windows.net//.default` → `https://management.core.windows.net/`. */
export function resourceFromScope(scope: string | undefined, resource: string | undefined): string | undefined {
  if (resource) return resource;
  if (!scope) return undefined;
  const s = scope.split(/\s+/).find((x) => x.endsWith('/.default'));
  return s ? s.slice(0, -'/.default'.length) : undefined;
}

function oidcDocument(origin: string, tenantSegment: string, adfs: boolean) {
  const base = `${origin}/${tenantSegment}`;
  const tokenPath = adfs ? `${base}/oauth2/token` : `${base}/oauth2/v2.0/token`;
  const authzPath = adfs ? `${base}/oauth2/authorize` : `${base}/oauth2/v2.0/authorize`;
  return {
    issuer: adfs ? `${origin}/adfs` : `${base}/v2.0`,
    authorization_endpoint: authzPath,
    token_endpoint: tokenPath,
    device_authorization_endpoint: adfs ? `${base}/oauth2/devicecode` : `${base}/oauth2/v2.0/devicecode`,
    end_session_endpoint: adfs ? `${base}/oauth2/logout` : `${base}/oauth2/v2.0/logout`,
    jwks_uri: adfs ? `${base}/discovery/keys` : `${base}/discovery/v2.0/keys`,
    userinfo_endpoint: `${origin}/oidc/userinfo`,
    token_endpoint_auth_methods_supported: ['client_secret_post', 'client_secret_basic'],
    response_modes_supported: ['query', 'fragment', 'form_post'],
    response_types_supported: ['code', 'id_token', 'code id_token', 'id_token token'],
    grant_types_supported: ['client_credentials', 'password'],
    subject_types_supported: ['pairwise'],
    scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
    id_token_signing_alg_values_supported: ['RS256'],
    claims_supported: ['sub', 'iss', 'aud', 'exp', 'iat', 'nbf', 'tid', 'oid', 'appid', 'name'],
    request_uri_parameter_supported: false,
    http_logout_supported: true,
    frontchannel_logout_supported: true,
    tenant_region_scope: null,
    cloud_instance_name: 'rsvault',
    cloud_graph_host_name: new URL(origin).host,
    msgraph_host: new URL(origin).host,
    rbac_url: origin,
  };
}

export function registerIdentityRoutes(app: FastifyInstance, deps: IdentityRouteDeps): void {
  const { identity, tokens } = deps;
  const pub = { plane: 'public' as const };

  // ---- OAuth2 / OIDC -------------------------------------------------------------------------------------------
  const tenantOk = (t: string) => ['common', 'organizations', 'adfs', identity.tenantId.toLowerCase()].includes(t.toLowerCase());
  const requireTenant = (t: string) => {
    if (!tenantOk(t)) throw new AadError(400, 'invalid_tenant', 90002, `Tenant '${t}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.`);
  };

  app.get('/:tenant/v2.0/.well-known/openid-configuration', { config: pub }, async (req) => {
    const { tenant } = req.params as { tenant: string };
    requireTenant(tenant);
    return oidcDocument(originOf(req), tenant, false);
  });
  app.get('/:tenant/.well-known/openid-configuration', { config: pub }, async (req) => {
    const { tenant } = req.params as { tenant: string };
    requireTenant(tenant);
    return oidcDocument(originOf(req), tenant, tenant.toLowerCase() === 'adfs');
  });
  for (const p of ['/:tenant/discovery/v2.0/keys', '/:tenant/discovery/keys', '/common/discovery/keys']) {
    app.get(p, { config: pub }, async () => jwksOf(tokens));
  }

  const throttle = deps.throttle ?? DEFAULT_THROTTLE;
  // Per client id / user name: the limit; per source address (any client id): 4× the limit, so one address cannot
  // spray guesses over many client ids, nor lock out every local client with a handful of typos.
  const byName = new FailureThrottle(throttle.failureLimit, throttle.failureWindowSec * 1000);
  const byAddr = new FailureThrottle(throttle.failureLimit * 4, throttle.failureWindowSec * 1000);
  const failures = {
    retryAfter: (name: string, addr: string) => Math.max(byName.retryAfter([name]), byAddr.retryAfter([addr])),
    fail: (name: string, addr: string) => {
      byName.fail([name]);
      byAddr.fail([addr]);
    },
  };
  const tooMany = (retryAfter: number, aadsts: number, message: string) => {
    return new AadError(429, 'temporarily_unavailable', aadsts, message, { 'retry-after': String(retryAfter) });
  };
  const tokenHandler = async (req: FastifyRequest) => {
    const params = (req.params ?? {}) as { tenant?: string };
    if (params.tenant) requireTenant(params.tenant);
    const form = (req.body ?? {}) as TokenFormT;
    if (typeof form !== 'object') throw new AadError(400, 'invalid_request', 900144, "The request body must contain the following parameter: 'grant_type'.");
    // client_secret_basic
    let clientId = form.client_id;
    let clientSecret = form.client_secret;
    const basic = /^Basic\s+(\S+)$/i.exec(req.headers.authorization ?? '');
    if (basic) {
      const [u, p] = Buffer.from(basic[1]!, 'base64').toString('utf8').split(':');
      clientId = clientId ?? decodeURIComponent(u ?? '');
      clientSecret = clientSecret ?? decodeURIComponent(p ?? '');
    }
    const grant = form.grant_type;
    if (!grant) throw new AadError(400, 'invalid_request', 900144, "The request body must contain the following parameter: 'grant_type'.");
    const resource = resourceFromScope(form.scope, form.resource);
    if (!resource) throw new AadError(400, 'invalid_scope', 1002012, "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).");
    const plane = planeOf(tokens, resource);
    if (!plane) throw new AadError(400, 'invalid_resource', 500011, `The resource principal named ${resource} was not found in the tenant named ${identity.tenantId}. This can happen if the application has not been installed by the administrator of the tenant.`);

    let principal: Principal;
    if (grant === 'client_credentials') {
      if (!clientId) throw new AadError(400, 'invalid_request', 900144, "The request body must contain the following parameter: 'client_id'.");
      if (!clientSecret) throw new AadError(401, 'invalid_client', 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.");
      // Locked out (too many failed secrets for this client id or from this address): refused before the secret is checked.
      const keys = [`client:${clientId.toLowerCase()}`, req.ip] as const;
      const wait = failures.retryAfter(...keys);
      if (wait > 0) throw tooMany(wait, 50053, `Too many failed sign-in attempts for application '${clientId}' or from this address; try again in ${wait} seconds.`);
      const r = await identity.authenticateClient(clientId, clientSecret);
      if (!r.ok) {
        failures.fail(...keys);
        if (r.reason === 'unknown_client') throw new AadError(400, 'unauthorized_client', 700016, `Application with identifier '${clientId}' was not found in the directory '${identity.tenantId}'.`);
        throw new AadError(401, 'invalid_client', 7000215, `Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${clientId}'.`);
      }
      principal = r.principal;
    } else if (grant === 'password') {
      const keys = [`user:${(form.username ?? '').toLowerCase()}`, req.ip] as const;
      const wait = failures.retryAfter(...keys);
      if (wait > 0) throw tooMany(wait, 50053, `Too many failed sign-in attempts for this user or from this address; try again in ${wait} seconds.`);
      const user = form.username && form.password ? await identity.authenticateUser(form.username, form.password) : undefined;
      if (!user) {
        failures.fail(...keys);
        throw new AadError(400, 'invalid_grant', 50126, 'Error validating credentials due to invalid username or password.');
      }
      principal = user;
    } else {
      throw new AadError(400, 'unsupported_grant_type', 70003, `The app requested an unsupported grant type '${grant}'.`);
    }
    const { token, expiresIn } = await tokens.issue({
      tid: identity.tenantId,
      oid: principal.objectId,
      appid: principal.appId,
      idtyp: principal.type === 'User' ? 'user' : 'app',
      aud: resource,
      name: principal.displayName,
    });
    const nowSec = Math.floor(Date.now() / 1000);
    return {
      token_type: 'Bearer',
      expires_in: expiresIn,
      ext_expires_in: expiresIn,
      expires_on: String(nowSec + expiresIn),
      not_before: String(nowSec),
      resource,
      access_token: token,
    };
  };
  // Throttled per source address + client id (@fastify/rate-limit, registered in this scope only): 429 + Retry-After.
  const clientOf = (req: FastifyRequest) => String(((req.body ?? {}) as TokenFormT).client_id ?? ((req.body ?? {}) as TokenFormT).username ?? '').toLowerCase();
  void app.register(async (scope) => {
    await scope.register(rateLimit, { global: false });
    const limit = rateLimitConfig(throttle.requestsPerMinute, (req) => `${req.ip}|${clientOf(req)}`, (after) => tooMany(after, 90055, `There are too many token requests from this address for this client; try again in ${after} seconds.`));
    for (const p of ['/:tenant/oauth2/v2.0/token', '/:tenant/oauth2/token']) {
      scope.post(p, { config: { ...pub, rateLimit: limit } }, tokenHandler);
    }
  });

  // ---- Cloud metadata (az cloud register autodetect) --------------------------------------------------------------
  app.get('/metadata/endpoints', { config: pub }, async (req) => {
    const origin = originOf(req);
    return {
      galleryEndpoint: `${origin}/`,
      graphEndpoint: `${origin}/`,
      portalEndpoint: `${origin}/`,
      authentication: { loginEndpoint: `${origin}/adfs`, audiences: ['https://management.core.windows.net/', `${origin}/`] },
    };
  });

  // ---- ARM: subscriptions, tenants, locations ------------------------------------------------------------------------
  const subView = (s: { id: string; tenant_id: string; display_name: string; state: string }) => ({
    id: `/subscriptions/${s.id}`,
    subscriptionId: s.id,
    tenantId: s.tenant_id,
    displayName: s.display_name,
    state: s.state,
    subscriptionPolicies: { locationPlacementId: 'Public_2014-09-01', quotaId: 'PayAsYouGo_2014-09-01', spendingLimit: 'Off' },
    authorizationSource: 'RoleBased',
    managedByTenants: [],
  });
  // Without an action: open to any authenticated caller (the lists show only what the caller may see).
  const arm = (action?: string): RouteConfig => (action ? { plane: 'arm', action } : { plane: 'arm', open: 'authenticated' });
  // Azure lists (and shows) every subscription where the caller holds any role assignment at or below it
  // (identity.maySeeSubscription); a caller without one gets 403 AuthorizationFailed for the subscription's read.
  const SUB_READ = 'Microsoft.Resources/subscriptions/read';
  const visibleSubscription = async (req: FastifyRequest, sub: string) => {
    if (!(await identity.maySeeSubscription(req.caller!, sub))) throw authorizationFailed(req.caller!, SUB_READ, `/subscriptions/${sub}`);
    const s = (await identity.subscriptions()).find((x) => x.id.toLowerCase() === sub.toLowerCase());
    if (!s) throw new ArmError(404, 'SubscriptionNotFound', `The subscription '${sub}' could not be found.`);
    return s;
  };
  app.get('/subscriptions', { config: arm() }, async (req) => {
    requireArmApiVersion(req.url);
    const subs = await identity.subscriptions();
    const visible = [];
    for (const s of subs) if (await identity.maySeeSubscription(req.caller!, s.id)) visible.push(subView(s));
    return { value: visible, count: { type: 'Total', value: visible.length } };
  });
  app.get('/subscriptions/:sub', { config: arm() }, async (req) => {
    requireArmApiVersion(req.url);
    const { sub } = req.params as { sub: string };
    return subView(await visibleSubscription(req, sub));
  });
  app.get('/subscriptions/:sub/locations', { config: arm() }, async (req) => {
    requireArmApiVersion(req.url);
    const { sub } = req.params as { sub: string };
    await visibleSubscription(req, sub);
    return { value: LOCATIONS.map((l) => ({ id: `/subscriptions/${sub}/locations/${l}`, name: l, displayName: l, regionalDisplayName: l, metadata: { regionType: 'Physical' } })) };
  });
  // Providers_List / Providers_Get: the namespaces rsvault serves, with their resource types and api-versions (az's
  // generic `az resource …` commands look the api-version up here). Nothing to register: every provider is Registered.
  const providerView = (sub: string, p: ProviderInfo) => ({
    id: `/subscriptions/${sub}/providers/${p.namespace}`,
    namespace: p.namespace,
    registrationState: 'Registered',
    registrationPolicy: 'RegistrationRequired',
    resourceTypes: p.resourceTypes.map((t) => ({ resourceType: t.resourceType, locations: [...LOCATIONS], apiVersions: t.apiVersions, capabilities: 'None' })),
  });
  app.get('/subscriptions/:sub/providers', { config: arm() }, async (req) => {
    requireArmApiVersion(req.url);
    const { sub } = req.params as { sub: string };
    await visibleSubscription(req, sub);
    return { value: providerInfo().map((p) => providerView(sub, p)) };
  });
  app.get('/subscriptions/:sub/providers/:ns', { config: arm() }, async (req) => {
    requireArmApiVersion(req.url);
    const { sub, ns } = req.params as { sub: string; ns: string };
    await visibleSubscription(req, sub);
    const [p] = providerInfo(ns);
    if (!p) throw new ArmError(404, 'InvalidResourceNamespace', `The resource namespace '${ns}' is invalid.`, { recommendation: `rsvault serves: ${providerInfo().map((x) => x.namespace).join(', ')}.` });
    return providerView(sub, p);
  });
  app.get('/tenants', { config: arm() }, async (req) => {
    requireArmApiVersion(req.url);
    return {
      value: (await identity.tenants()).map((t) => ({
        id: `/tenants/${t.id}`,
        tenantId: t.id,
        tenantCategory: 'Home',
        displayName: t.display_name,
        defaultDomain: 'rsvault.localhost',
        domains: ['rsvault.localhost'],
        tenantType: 'AAD',
      })),
    };
  });

  // ---- Microsoft.Authorization -----------------------------------------------------------------------------------
  const scopePrefixes = [
    '',
    '/subscriptions/:sub',
    '/subscriptions/:sub/resourceGroups/:rg',
    '/subscriptions/:sub/resourceGroups/:rg/providers/:ns/:type/:res',
  ];
  const scopeOfUrl = (req: FastifyRequest) => {
    const path = decodeURIComponent(req.url.replace(/\?.*$/, ''));
    const i = path.toLowerCase().indexOf('/providers/microsoft.authorization/');
    return i <= 0 ? '/' : path.slice(0, i);
  };
  const raView = (a: RoleAssignment) => ({
    id: a.id,
    name: a.name,
    type: 'Microsoft.Authorization/roleAssignments',
    properties: {
      roleDefinitionId: `/subscriptions/${identity.subscriptionId}/providers/Microsoft.Authorization/roleDefinitions/${a.roleDefinitionId}`,
      principalId: a.principalId,
      principalType: a.principalType,
      scope: a.scope,
      condition: null,
      conditionVersion: null,
      createdOn: new Date(a.createdAt).toISOString(),
      updatedOn: new Date(a.createdAt).toISOString(),
    },
  });
  const rdView = (r: RoleDefinition) => ({
    id: `/subscriptions/${identity.subscriptionId}/providers/Microsoft.Authorization/roleDefinitions/${r.id}`,
    name: r.id,
    type: 'Microsoft.Authorization/roleDefinitions',
    properties: {
      roleName: r.roleName,
      type: 'BuiltInRole',
      description: r.description,
      assignableScopes: ['/'],
      permissions: [{ actions: r.actions, notActions: r.notActions, dataActions: r.dataActions, notDataActions: r.notDataActions }],
    },
  });
  const RaBody = Type.Object({
    properties: Type.Object(
      {
        roleDefinitionId: Type.String({ minLength: 1 }),
        principalId: Type.String({ minLength: 1 }),
        principalType: Type.Optional(Type.Union([Type.Literal('ServicePrincipal'), Type.Literal('User'), Type.Literal('Group'), Type.Literal('ForeignGroup'), Type.Literal('Device')])),
        description: Type.Optional(Type.Union([Type.String(), Type.Null()])),
        condition: Type.Optional(Type.Union([Type.String(), Type.Null()])),
        conditionVersion: Type.Optional(Type.Union([Type.String(), Type.Null()])),
        delegatedManagedIdentityResourceId: Type.Optional(Type.Union([Type.String(), Type.Null()])),
      },
      { additionalProperties: false },
    ),
  });

  for (const prefix of scopePrefixes) {
    const base = `${prefix}/providers/Microsoft.Authorization`;
    app.put(`${base}/roleAssignments/:name`, { schema: { body: RaBody }, config: { plane: 'arm', action: 'Microsoft.Authorization/roleAssignments/write', scope: scopeOfUrl } }, async (req, reply) => {
      requireArmApiVersion(req.url);
      const { name } = req.params as { name: string };
      const body = req.body as Static<typeof RaBody>;
      const a = await identity.assignRole({ principalId: body.properties.principalId, role: body.properties.roleDefinitionId, scope: scopeOfUrl(req), name });
      return reply.code(201).send(raView(a));
    });
    app.get(`${base}/roleAssignments/:name`, { config: { plane: 'arm', action: 'Microsoft.Authorization/roleAssignments/read', scope: scopeOfUrl } }, async (req) => {
      requireArmApiVersion(req.url);
      const { name } = req.params as { name: string };
      const a = await identity.assignmentAt(scopeOfUrl(req), name);
      if (!a) throw new ArmError(404, 'RoleAssignmentNotFound', `The role assignment '${name}' is not found.`);
      return raView(a);
    });
    app.delete(`${base}/roleAssignments/:name`, { config: { plane: 'arm', action: 'Microsoft.Authorization/roleAssignments/delete', scope: scopeOfUrl } }, async (req, reply) => {
      requireArmApiVersion(req.url);
      const { name } = req.params as { name: string };
      const a = await identity.deleteAssignment(scopeOfUrl(req), name);
      if (!a) return reply.code(204).send(); // none at or below this scope: Azure's answer for an absent assignment
      return raView(a);
    });
    app.get(`${base}/roleAssignments`, { config: { plane: 'arm', action: 'Microsoft.Authorization/roleAssignments/read', scope: scopeOfUrl } }, async (req) => {
      requireArmApiVersion(req.url);
      const url = new URL(req.url, 'https://x');
      const filter = url.searchParams.get('$filter') ?? '';
      const principalId = /principalId\s+eq\s+'([^']+)'/i.exec(filter)?.[1];
      const assignments = await identity.listAssignments({ scope: scopeOfUrl(req), principalId, atScopeAndBelow: !/atScope\(\)/i.test(filter) });
      return paginate(assignments.map(raView), new URL(req.url, originOf(req)));
    });
    app.get(`${base}/roleDefinitions`, { config: { plane: 'arm', action: 'Microsoft.Authorization/roleDefinitions/read', scope: scopeOfUrl } }, async (req) => {
      requireArmApiVersion(req.url);
      const filter = new URL(req.url, 'https://x').searchParams.get('$filter') ?? '';
      const roleName = /roleName\s+eq\s+'([^']+)'/i.exec(filter)?.[1];
      const roles = roleName ? BUILT_IN_ROLES.filter((r) => r.roleName.toLowerCase() === roleName.toLowerCase()) : BUILT_IN_ROLES;
      return { value: roles.map(rdView) };
    });
    app.get(`${base}/roleDefinitions/:id`, { config: { plane: 'arm', action: 'Microsoft.Authorization/roleDefinitions/read', scope: scopeOfUrl } }, async (req) => {
      requireArmApiVersion(req.url);
      const r = findRole((req.params as { id: string }).id);
      if (!r) throw new ArmError(404, 'RoleDefinitionDoesNotExist', 'The specified role definition does not exist.');
      return rdView(r);
    });
  }

  // ---- Graph-lite ---------------------------------------------------------------------------------------------------
  const g = { plane: 'graph' as const, open: 'authenticated' as const }; // Graph-lite: any signed-in caller, as in Entra ID
  const spView = (p: Principal) => ({
    id: p.objectId,
    appId: p.appId,
    displayName: p.displayName,
    appDisplayName: p.displayName,
    servicePrincipalNames: p.appId ? [p.appId] : [],
    // Azure's first-party services (the Backup Management Service among them) are 'Application' principals, as apps.
    servicePrincipalType: 'Application',
    accountEnabled: true,
    appOwnerOrganizationId: p.tenantId,
    createdDateTime: new Date(p.createdAt).toISOString(),
  });
  const userView = (p: Principal) => ({
    id: p.objectId,
    displayName: p.displayName,
    userPrincipalName: p.userPrincipalName,
    mail: p.userPrincipalName,
    accountEnabled: true,
  });
  const requireDirectoryWriter = async (req: FastifyRequest) => {
    if (!(await identity.checkAccess(req.caller!, `/subscriptions/${identity.subscriptionId}`, 'Microsoft.Authorization/roleAssignments/write'))) {
      throw new ArmError(403, 'Authorization_RequestDenied', 'Insufficient privileges to complete the operation: creating directory objects needs the Owner role on the subscription.');
    }
  };
  const odata = (req: FastifyRequest, kind: string) => `${originOf(req)}/v1.0/$metadata#${kind}`;

  app.get('/v1.0/me', { config: g }, async (req) => {
    const c = req.caller!;
    if (c.kind !== 'User') throw new ArmError(400, 'BadRequest', '/me request is only valid with delegated authentication flow.');
    const p = await identity.principal(c.objectId);
    if (!p) throw graphNotFound(c.objectId);
    return { '@odata.context': odata(req, 'users/$entity'), ...userView(p) };
  });

  app.get('/v1.0/servicePrincipals', { config: g }, async (req) => {
    const filter = new URL(req.url, 'https://x').searchParams.get('$filter');
    let list = await identity.listPrincipals('ServicePrincipal');
    if (filter) list = list.filter(graphFilter(filter));
    return { '@odata.context': odata(req, 'servicePrincipals'), value: list.map(spView) };
  });
  app.get('/v1.0/servicePrincipals/:id', { config: g }, async (req) => {
    const { id } = req.params as { id: string };
    const p = (await identity.principal(id)) ?? (await identity.principalByAppId(id));
    if (!p || p.type !== 'ServicePrincipal') throw graphNotFound(id);
    return { '@odata.context': odata(req, 'servicePrincipals/$entity'), ...spView(p) };
  });
  const SpCreate = Type.Object({ displayName: Type.String({ minLength: 1, maxLength: 256 }) }, { additionalProperties: true });
  app.post('/v1.0/servicePrincipals', { schema: { body: SpCreate }, config: g }, async (req, reply) => {
    await requireDirectoryWriter(req);
    const { displayName } = req.body as Static<typeof SpCreate>;
    const { principal, secret } = await identity.createServicePrincipal(displayName);
    // Azure returns the secret only from addPassword; rsvault creates the first one with the principal, returned once here.
    return reply.code(201).send({ ...spView(principal), passwordCredentials: [{ secretText: secret, displayName: 'rbac' }] });
  });
  const AddPw = Type.Object({ passwordCredential: Type.Optional(Type.Object({ displayName: Type.Optional(Type.String()), endDateTime: Type.Optional(Type.String({ format: 'date-time' })) }, { additionalProperties: true })) }, { additionalProperties: true });
  app.post('/v1.0/servicePrincipals/:id/addPassword', { schema: { body: AddPw }, config: g }, async (req) => {
    await requireDirectoryWriter(req);
    const { id } = req.params as { id: string };
    const body = (req.body ?? {}) as Static<typeof AddPw>;
    const end = body.passwordCredential?.endDateTime ? Date.parse(body.passwordCredential.endDateTime) : null;
    const r = await identity.addPassword(id, body.passwordCredential?.displayName ?? 'password', end);
    return { keyId: r.keyId, secretText: r.secretText, hint: r.hint, displayName: body.passwordCredential?.displayName ?? 'password', endDateTime: end ? new Date(end).toISOString() : null };
  });
  app.delete('/v1.0/servicePrincipals/:id', { config: g }, async (req, reply) => {
    await requireDirectoryWriter(req);
    const { id } = req.params as { id: string };
    const p = (await identity.principal(id)) ?? (await identity.principalByAppId(id));
    if (!p || p.type !== 'ServicePrincipal' || p.builtIn) throw graphNotFound(id);
    await identity.deletePrincipal(p.objectId);
    return reply.code(204).send();
  });

  // directoryObjects/getByIds: the objects of the given ids (unknown ids are left out), each with its @odata.type;
  // `types` narrows to user / servicePrincipal. az calls it to show principal names (role assignment list).
  const GetByIds = Type.Object({ ids: Type.Array(Type.String({ maxLength: 128 }), { maxItems: 1000 }), types: Type.Optional(Type.Array(Type.String({ maxLength: 64 }), { maxItems: 10 })) }, { additionalProperties: true });
  app.post('/v1.0/directoryObjects/getByIds', { schema: { body: GetByIds }, config: g }, async (req) => {
    const b = req.body as Static<typeof GetByIds>;
    const types = (b.types ?? []).map((t) => t.toLowerCase().replace(/^#?microsoft\.graph\./, ''));
    for (const t of types) {
      if (!['user', 'serviceprincipal', 'group', 'application', 'device', 'directoryobject', 'directoryobjectpartnerreference'].includes(t)) throw new ArmError(400, 'Request_BadRequest', `Invalid type '${t}' in 'types': use user, servicePrincipal, group, application or device.`, { target: 'types' });
    }
    const want = (kind: string) => types.length === 0 || types.includes(kind) || types.includes('directoryobject');
    const value: Record<string, unknown>[] = [];
    for (const id of [...new Set(b.ids)]) {
      const p = await identity.principal(id);
      if (!p) continue;
      if (p.type === 'ServicePrincipal' && want('serviceprincipal')) value.push({ '@odata.type': '#microsoft.graph.servicePrincipal', ...spView(p) });
      else if (p.type === 'User' && want('user')) value.push({ '@odata.type': '#microsoft.graph.user', ...userView(p) });
    }
    return { '@odata.context': odata(req, 'directoryObjects'), value };
  });

  app.get('/v1.0/users', { config: g }, async (req) => {
    const filter = new URL(req.url, 'https://x').searchParams.get('$filter');
    let list = await identity.listPrincipals('User');
    if (filter) list = list.filter(graphFilter(filter));
    return { '@odata.context': odata(req, 'users'), value: list.map(userView) };
  });
  app.get('/v1.0/users/:id', { config: g }, async (req) => {
    const { id } = req.params as { id: string };
    const p = (await identity.principal(id)) ?? (await identity.principalByUpn(id));
    if (!p || p.type !== 'User') throw graphNotFound(id);
    return { '@odata.context': odata(req, 'users/$entity'), ...userView(p) };
  });
  const UserCreate = Type.Object(
    {
      displayName: Type.String({ minLength: 1, maxLength: 256 }),
      userPrincipalName: Type.String({ minLength: 3 }),
      passwordProfile: Type.Object({ password: Type.String({ minLength: 1 }) }, { additionalProperties: true }),
    },
    { additionalProperties: true },
  );
  app.post('/v1.0/users', { schema: { body: UserCreate }, config: g }, async (req, reply) => {
    await requireDirectoryWriter(req);
    const b = req.body as Static<typeof UserCreate>;
    const p = await identity.createUser(b.displayName, b.userPrincipalName, b.passwordProfile.password);
    return reply.code(201).send({ '@odata.context': odata(req, 'users/$entity'), ...userView(p) });
  });
}

export const LOCATIONS = ['local', 'eastus', 'westeurope'];

async function jwksOf(tokens: TokenService) {
  return tokens.jwks();
}

/** Which plane a requested resource belongs to, if any. */
export function planeOf(tokens: TokenService, resource: string): Plane | undefined {
  const r = normAud(resource);
  for (const plane of ['arm', 'vault', 'graph', 'storage'] as const) {
    if (tokens.audiencesOf(plane).map(normAud).includes(r)) return plane;
  }
  return undefined;
}

/** The Graph $filter forms clients send for principals. */
export function graphFilter(filter: string): (p: Principal) => boolean {
  const f = filter.trim();
  let m = /^servicePrincipalNames\/any\(\s*(\w+)\s*:\s*\1\s+eq\s+'((?:[^']|'')*)'\s*\)$/i.exec(f);
  if (m) {
    const v = m[2]!.replace(/''/g, "'").toLowerCase();
    return (p) => (p.appId ?? '').toLowerCase() === v;
  }
  m = /^(displayName|appId|userPrincipalName|id)\s+eq\s+'((?:[^']|'')*)'$/i.exec(f);
  if (m) {
    const field = m[1]!.toLowerCase();
    const v = m[2]!.replace(/''/g, "'").toLowerCase();
    return (p) => fieldOf(p, field).toLowerCase() === v;
  }
  m = /^startswith\(\s*(displayName|userPrincipalName)\s*,\s*'((?:[^']|'')*)'\s*\)$/i.exec(f);
  if (m) {
    const field = m[1]!.toLowerCase();
    const v = m[2]!.replace(/''/g, "'").toLowerCase();
    return (p) => fieldOf(p, field).toLowerCase().startsWith(v);
  }
  throw new ArmError(400, 'Request_UnsupportedQuery', `Unsupported query: '${filter}'. Supported: displayName eq '…', startswith(displayName,'…'), appId eq '…', servicePrincipalNames/any(c:c eq '…').`);
}

function fieldOf(p: Principal, field: string): string {
  switch (field) {
    case 'displayname':
      return p.displayName;
    case 'appid':
      return p.appId ?? '';
    case 'userprincipalname':
      return p.userPrincipalName ?? '';
    default:
      return p.objectId;
  }
}
