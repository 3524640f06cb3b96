/** Identity use cases: bootstrap, principals and credentials, sign-in checks, RBAC. */
import { randomUUID } from 'node:crypto';
import { ArmError } from '../platform/http/errors.js';
import { hashSecret, newClientSecret, verifySecret } from '../platform/crypto.js';
import type { Authorizer, Caller } from '../platform/auth/index.js';
import type { Settings } from '../platform/db/kv.js';
import { retryOnUniqueViolation } from '../platform/db/index.js';
import {
  BUILT_IN_ROLES,
  BACKUP_MANAGEMENT_SERVICE_APP_ID,
  BACKUP_MANAGEMENT_SERVICE_NAME,
  findRole,
  isGuid,
  hasDotSegments,
  normScope,
  OWNER_ROLE_ID,
  roleAllows,
  scopeCovers,
  type Principal,
  type PrincipalType,
  type RoleAssignment,
} from './model.js';
import type { IdentityStore } from './store.js';

export interface BootstrapResult {
  tenantId: string;
  subscriptionId: string;
  /** Present only on the first start: the bootstrap admin's credentials (the secret is never stored in clear). */
  admin?: { clientId: string; clientSecret: string; objectId: string };
}

export type ClientAuthResult =
  | { ok: true; principal: Principal }
  | { ok: false; reason: 'unknown_client' | 'invalid_secret' | 'disabled' };

type AssignInput = { principalId: string; role: string; scope: string; name?: string | undefined };

export class IdentityService implements Authorizer {
  private tenant = '';
  private subscription = '';

  constructor(
    private readonly store: IdentityStore,
    private readonly settings: Settings,
  ) {}

  get tenantId(): string {
    return this.tenant;
  }
  get subscriptionId(): string {
    return this.subscription;
  }

  async bootstrap(): Promise<BootstrapResult> {
    const existingTenant = await this.settings.get('identity.tenantId');
    if (existingTenant) {
      this.tenant = existingTenant;
      this.subscription = (await this.settings.get('identity.subscriptionId'))!;
      return { tenantId: this.tenant, subscriptionId: this.subscription };
    }
    const tenantId = randomUUID();
    const subscriptionId = randomUUID();
    await this.store.insertTenant(tenantId, 'rsvault');
    await this.store.insertSubscription(subscriptionId, tenantId, 'rsvault subscription');
    this.tenant = tenantId;
    this.subscription = subscriptionId;
    await this.store.insertPrincipal({
      objectId: randomUUID(),
      tenantId,
      type: 'ServicePrincipal',
      displayName: BACKUP_MANAGEMENT_SERVICE_NAME,
      appId: BACKUP_MANAGEMENT_SERVICE_APP_ID,
      builtIn: true,
      createdAt: Date.now(),
    });
    const { principal, secret } = await this.createServicePrincipal('rsvault-bootstrap-admin', true);
    await this.assignRole({ principalId: principal.objectId, role: 'Owner', scope: `/subscriptions/${subscriptionId}` });
    await this.settings.set('identity.tenantId', tenantId);
    await this.settings.set('identity.subscriptionId', subscriptionId);
    return { tenantId, subscriptionId, admin: { clientId: principal.appId!, clientSecret: secret, objectId: principal.objectId } };
  }

  async backupManagementService(): Promise<Principal> {
    return (await this.store.principalByAppId(BACKUP_MANAGEMENT_SERVICE_APP_ID))!;
  }

  async createServicePrincipal(displayName: string, builtIn = false): Promise<{ principal: Principal; secret: string }> {
    const name = displayName.trim();
    if (!name || name.length > 256) throw new ArmError(400, 'InvalidRequestContent', 'displayName must be 1-256 characters.', { target: 'displayName' });
    const principal: Principal = {
      objectId: randomUUID(),
      tenantId: this.tenant,
      type: 'ServicePrincipal',
      displayName: name,
      appId: randomUUID(),
      builtIn,
      createdAt: Date.now(),
    };
    await this.store.insertPrincipal(principal);
    const secret = await this.addPassword(principal.objectId);
    return { principal, secret: secret.secretText };
  }

  async addPassword(objectId: string, displayName = 'rbac', endAt: number | null = null): Promise<{ keyId: string; secretText: string; hint: string }> {
    const p = await this.store.principalById(objectId);
    if (!p || p.type !== 'ServicePrincipal') throw graphNotFound(objectId);
    if (p.appId === BACKUP_MANAGEMENT_SERVICE_APP_ID) {
      throw new ArmError(403, 'Authorization_RequestDenied', 'The Backup Management Service principal is built in: it has no secrets and nobody can sign in as it.');
    }
    const secretText = newClientSecret();
    const keyId = randomUUID();
    await this.store.addCredential(keyId, objectId, await hashSecret(secretText), displayName, endAt);
    return { keyId, secretText, hint: secretText.slice(0, 3) };
  }

  async createUser(displayName: string, userPrincipalName: string, password: string): Promise<Principal> {
    const upn = userPrincipalName.trim().toLowerCase();
    if (!/^[^@\s]+@[^@\s]+$/.test(upn)) throw new ArmError(400, 'Request_BadRequest', `Invalid userPrincipalName '${userPrincipalName}': expected name@domain.`);
    if (password.length < 8) throw new ArmError(400, 'Request_BadRequest', 'The password must be at least 8 characters long.');
    if (await this.store.principalByUpn(upn)) throw new ArmError(400, 'Request_BadRequest', `Another object with the same value for property userPrincipalName already exists: '${upn}'.`);
    const principal: Principal = { objectId: randomUUID(), tenantId: this.tenant, type: 'User', displayName: displayName.trim() || upn, userPrincipalName: upn, builtIn: false, createdAt: Date.now() };
    await this.store.insertPrincipal(principal);
    await this.store.addCredential(randomUUID(), principal.objectId, await hashSecret(password), 'password', null);
    return principal;
  }

  async authenticateClient(clientId: string, secret: string): Promise<ClientAuthResult> {
    const p = isGuid(clientId) ? await this.store.principalByAppId(clientId) : undefined;
    if (!p || p.type !== 'ServicePrincipal') return { ok: false, reason: 'unknown_client' };
    for (const c of await this.store.credentials(p.objectId)) {
      if (c.end_at !== null && Number(c.end_at) < Date.now()) continue;
      if (await verifySecret(secret, c.secret_hash)) return { ok: true, principal: p };
    }
    return { ok: false, reason: 'invalid_secret' };
  }

  async authenticateUser(upn: string, password: string): Promise<Principal | undefined> {
    const p = await this.store.principalByUpn(upn.trim().toLowerCase());
    if (!p || p.type !== 'User') return undefined;
    for (const c of await this.store.credentials(p.objectId)) {
      if (await verifySecret(password, c.secret_hash)) return p;
    }
    return undefined;
  }

  principal(objectId: string) {
    return this.store.principalById(objectId);
  }
  principalByAppId(appId: string) {
    return this.store.principalByAppId(appId);
  }
  principalByUpn(upn: string) {
    return this.store.principalByUpn(upn);
  }
  listPrincipals(type?: PrincipalType) {
    return this.store.listPrincipals(type);
  }
  /** Deletes a principal and its role assignments; refused when it holds the subscription's last Owner assignment. */
  async deletePrincipal(objectId: string): Promise<void> {
    const r = await this.store.deletePrincipalUnlessLastOwner(objectId.toLowerCase(), this.subscriptionOwner());
    if (r === 'last') throw this.lastOwner((await this.store.assignmentsOf(objectId.toLowerCase())).find((a) => a.roleDefinitionId === OWNER_ROLE_ID)?.name ?? objectId);
    if (r === 'absent') throw graphNotFound(objectId);
  }
  subscriptions() {
    return this.store.subscriptions();
  }
  tenants() {
    return this.store.tenants();
  }

  /** Resolves an assignee given as object id, app id or user principal name. */
  async resolveAssignee(assignee: string): Promise<Principal | undefined> {
    if (isGuid(assignee)) return (await this.store.principalById(assignee)) ?? (await this.store.principalByAppId(assignee));
    return this.store.principalByUpn(assignee);
  }

  /**
   * Creates a role assignment (idempotent for the same name, principal, role and scope). Concurrent requests that
   * race to insert the same assignment (any process) are re-run: they then find the winner's row.
   */
  assignRole(input: AssignInput): Promise<RoleAssignment> {
    return retryOnUniqueViolation(() => this.assignRoleOnce(input));
  }

  private async assignRoleOnce(input: AssignInput): Promise<RoleAssignment> {
    const role = findRole(input.role);
    if (!role) {
      throw new ArmError(400, 'RoleDefinitionDoesNotExist', `The role '${input.role}' does not exist.`, {
        recommendation: `Use one of: ${BUILT_IN_ROLES.map((r) => r.roleName).join(', ')}.`,
      });
    }
    const principal = await this.store.principalById(input.principalId);
    if (!principal) {
      throw new ArmError(400, 'PrincipalNotFound', `Principal ${input.principalId} does not exist in the directory ${this.tenant}.`, {
        recommendation: 'Look the object id up with: rsvault ad sp list --display-name <name>',
      });
    }
    this.assertScope(input.scope);
    const scopeNorm = normScope(input.scope);
    if (input.name) {
      // Azure: an assignment's principal, role and scope never change; a PUT of an existing name must repeat them.
      const byName = await this.store.assignmentByName(input.name);
      if (byName) {
        if (normScope(byName.scope) === scopeNorm && byName.principalId === principal.objectId && byName.roleDefinitionId === role.id) return byName;
        throw new ArmError(400, 'RoleAssignmentUpdateNotPermitted', 'Tenant ID, application ID, principal ID, and scope are not allowed to be updated.', {
          recommendation: 'Create a new role assignment (with a new name) instead, and delete the old one if it is no longer needed.',
        });
      }
    }
    const existing = (await this.store.assignmentsOf(principal.objectId)).find((a) => normScope(a.scope) === scopeNorm && a.roleDefinitionId === role.id);
    if (existing) {
      if (input.name && existing.name !== input.name.toLowerCase()) {
        throw new ArmError(409, 'RoleAssignmentExists', 'The role assignment already exists.', { details: [{ code: 'ExistingRoleAssignmentName', message: existing.name }] });
      }
      return existing;
    }
    const name = (input.name ?? randomUUID()).toLowerCase();
    if (!isGuid(name)) throw new ArmError(400, 'InvalidRoleAssignmentId', `The role assignment ID '${name}' is not valid. The role assignment ID must be a GUID.`);
    const scope = '/' + input.scope.split('/').filter(Boolean).join('/');
    const a: RoleAssignment = {
      id: `${scope === '/' ? '' : scope}/providers/Microsoft.Authorization/roleAssignments/${name}`,
      name,
      scope,
      roleDefinitionId: role.id,
      principalId: principal.objectId,
      principalType: principal.type,
      createdAt: Date.now(),
    };
    await this.store.insertAssignment(a, scopeNorm);
    return a;
  }

  private assertScope(scope: string): void {
    const parts = scope.split('/').filter(Boolean);
    if (parts.length < 2 || parts[0]!.toLowerCase() !== 'subscriptions') {
      throw new ArmError(400, 'InvalidScope', `The scope '${scope}' is not valid: expected /subscriptions/{id}[/resourceGroups/{rg}[/providers/...]].`);
    }
    if (hasDotSegments(scope)) throw new ArmError(400, 'InvalidScope', `The scope '${scope}' is not valid: '.' and '..' segments are not allowed.`);
    if (parts[1]!.toLowerCase() !== this.subscription.toLowerCase()) throw new ArmError(404, 'SubscriptionNotFound', `The subscription '${parts[1]}' could not be found.`);
  }

  async listAssignments(filter: { scope?: string | undefined; principalId?: string | undefined; atScopeAndBelow?: boolean } = {}): Promise<RoleAssignment[]> {
    let all = await this.store.allAssignments();
    if (filter.principalId) all = all.filter((a) => a.principalId === filter.principalId!.toLowerCase());
    if (filter.scope) {
      const s = filter.scope;
      // Azure lists assignments that apply at the scope (inherited from above) and, with atScopeAndBelow, beneath it.
      all = all.filter((a) => scopeCovers(a.scope, s) || (filter.atScopeAndBelow === true && scopeCovers(s, a.scope)));
    }
    return all;
  }

  /**
   * The assignment named `name` when its scope is at or below `urlScope` (the scope of the URL it was asked through);
   * an assignment elsewhere is not found there, as in Azure (an Owner of one resource group never reaches the
   * subscription's assignments through the group's URL).
   */
  async assignmentAt(urlScope: string, name: string): Promise<RoleAssignment | undefined> {
    const a = await this.store.assignmentByName(name);
    return a && scopeCovers(urlScope, a.scope) ? a : undefined;
  }

  /**
   * Deletes the assignment named `name` if it is at or below `urlScope` (undefined when there is none there). The last
   * Owner assignment of the subscription is never removed: 409 LastOwnerCannotBeRemoved.
   */
  async deleteAssignment(urlScope: string, name: string): Promise<RoleAssignment | undefined> {
    const a = await this.assignmentAt(urlScope, name);
    if (!a) return undefined;
    const r = await this.store.deleteAssignmentUnlessLast(a.name, this.subscriptionOwner());
    if (r === 'last') throw this.lastOwner(a.name);
    return r === 'deleted' ? a : undefined;
  }

  /** The subscription's Owner assignments (Owner at the subscription's own scope): at least one must stay. */
  private subscriptionOwner(): { roleId: string; scopeNorm: string } {
    return { roleId: OWNER_ROLE_ID, scopeNorm: normScope(`/subscriptions/${this.subscription}`) };
  }

  private lastOwner(name: string): ArmError {
    const subScope = `/subscriptions/${this.subscription}`;
    return new ArmError(409, 'LastOwnerCannotBeRemoved', `The role assignment '${name}' is the last Owner assignment of subscription '${this.subscription}': removing it would leave nobody who can assign roles.`, {
      recommendation: `Assign Owner to another principal first: rsvault role assignment create --assignee <principal> --role Owner --scope ${subScope}`,
    });
  }

  /**
   * May `caller` see the subscription `subscriptionId` (GET /subscriptions, GET /subscriptions/{id}, its locations)?
   * As in Azure: any role assignment at, above or below the subscription's scope is enough — a Reader of one resource
   * group lists the subscription (so `az login` / `rsvault login` select it), without reading anything else in it.
   */
  async maySeeSubscription(caller: Caller, subscriptionId: string): Promise<boolean> {
    if (caller.internal) return true;
    const sub = `/subscriptions/${subscriptionId}`;
    return (await this.store.assignmentsOf(caller.objectId)).some((a) => findRole(a.roleDefinitionId) !== undefined && (scopeCovers(a.scope, sub) || scopeCovers(sub, a.scope)));
  }

  async checkAccess(caller: Caller, scope: string, action: string): Promise<boolean> {
    if (caller.internal) return true;
    for (const a of await this.store.assignmentsOf(caller.objectId)) {
      if (!scopeCovers(a.scope, scope)) continue;
      const role = findRole(a.roleDefinitionId);
      if (role && roleAllows(role, action)) return true;
    }
    return false;
  }
}

export function graphNotFound(id: string): ArmError {
  return new ArmError(404, 'Request_ResourceNotFound', `Resource '${id}' does not exist or one of its queried reference-property objects are not present.`);
}
