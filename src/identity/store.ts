/** Identity tables (Kysely). */
import { PostgresAdapter, type Kysely } from 'kysely';
import { sql, type Db, type Migration } from '../platform/db/index.js';
import type { Principal, PrincipalType, RoleAssignment } from './model.js';

export type IdentityTables = {
  identity_tenants: { id: string; display_name: string; created_at: number };
  identity_subscriptions: { id: string; tenant_id: string; display_name: string; state: string; created_at: number };
  identity_principals: {
    object_id: string;
    tenant_id: string;
    type: string;
    display_name: string;
    app_id: string | null;
    user_principal_name: string | null;
    built_in: number;
    created_at: number;
  };
  identity_credentials: { id: string; principal_id: string; secret_hash: string; display_name: string; end_at: number | null; created_at: number };
  identity_role_assignments: {
    id: string;
    name: string;
    scope: string;
    scope_norm: string;
    role_definition_id: string;
    principal_id: string;
    principal_type: string;
    created_at: number;
  };
}

export const identityMigrations: Migration[] = [
  {
    name: '0101_identity_init',
    async up(db: Kysely<unknown>) {
      await db.schema.createTable('identity_tenants').addColumn('id', 'text', (c) => c.primaryKey()).addColumn('display_name', 'text', (c) => c.notNull()).addColumn('created_at', 'bigint', (c) => c.notNull()).execute();
      await db.schema
        .createTable('identity_subscriptions')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) => c.notNull().references('identity_tenants.id'))
        .addColumn('display_name', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('identity_principals')
        .addColumn('object_id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) => c.notNull())
        .addColumn('type', 'text', (c) => c.notNull())
        .addColumn('display_name', 'text', (c) => c.notNull())
        .addColumn('app_id', 'text', (c) => c.unique())
        .addColumn('user_principal_name', 'text', (c) => c.unique())
        .addColumn('built_in', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('identity_principals_name').on('identity_principals').column('display_name').execute();
      await db.schema
        .createTable('identity_credentials')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('principal_id', 'text', (c) => c.notNull().references('identity_principals.object_id').onDelete('cascade'))
        .addColumn('secret_hash', 'text', (c) => c.notNull())
        .addColumn('display_name', 'text', (c) => c.notNull())
        .addColumn('end_at', 'bigint')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('identity_role_assignments')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull().unique())
        .addColumn('scope', 'text', (c) => c.notNull())
        .addColumn('scope_norm', 'text', (c) => c.notNull())
        .addColumn('role_definition_id', 'text', (c) => c.notNull())
        .addColumn('principal_id', 'text', (c) => c.notNull())
        .addColumn('principal_type', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('identity_ra_principal').on('identity_role_assignments').column('principal_id').execute();
    },
  },
  {
    // One assignment per principal + role + scope, enforced by the database: two concurrent PUTs under different
    // names (two api processes, or two requests of one) could both pass the service's look-up and insert twins.
    // Twins left by that race grant the same thing: the oldest (then lowest name) of each is kept.
    name: '0102_identity_role_assignment_unique',
    async up(db: Kysely<unknown>) {
      await sql`DELETE FROM identity_role_assignments WHERE EXISTS (
        SELECT 1 FROM identity_role_assignments o
        WHERE o.principal_id = identity_role_assignments.principal_id AND o.role_definition_id = identity_role_assignments.role_definition_id
          AND o.scope_norm = identity_role_assignments.scope_norm
          AND (o.created_at < identity_role_assignments.created_at OR (o.created_at = identity_role_assignments.created_at AND o.name < identity_role_assignments.name)))`.execute(db);
      await db.schema.createIndex('identity_ra_unique').on('identity_role_assignments').columns(['principal_id', 'role_definition_id', 'scope_norm']).unique().execute();
    },
  },
];

type PrincipalRow = IdentityTables['identity_principals'];

const toPrincipal = (r: PrincipalRow): Principal => ({
  objectId: r.object_id,
  tenantId: r.tenant_id,
  type: r.type as PrincipalType,
  displayName: r.display_name,
  appId: r.app_id ?? undefined,
  userPrincipalName: r.user_principal_name ?? undefined,
  builtIn: r.built_in === 1,
  createdAt: Number(r.created_at),
});

type RaRow = IdentityTables['identity_role_assignments'];
const toAssignment = (r: RaRow): RoleAssignment => ({
  id: r.id,
  name: r.name,
  scope: r.scope,
  roleDefinitionId: r.role_definition_id,
  principalId: r.principal_id,
  principalType: r.principal_type as PrincipalType,
  createdAt: Number(r.created_at),
});

export class IdentityStore {
  readonly db: Kysely<IdentityTables>;
  constructor(db: Db) {
    this.db = db.withTables<IdentityTables>();
  }

  async tenants() {
    return this.db.selectFrom('identity_tenants').selectAll().execute();
  }
  async subscriptions() {
    return this.db.selectFrom('identity_subscriptions').selectAll().execute();
  }
  async insertTenant(id: string, name: string) {
    await this.db.insertInto('identity_tenants').values({ id, display_name: name, created_at: Date.now() }).execute();
  }
  async insertSubscription(id: string, tenantId: string, name: string) {
    await this.db.insertInto('identity_subscriptions').values({ id, tenant_id: tenantId, display_name: name, state: 'Enabled', created_at: Date.now() }).execute();
  }

  async insertPrincipal(p: Principal) {
    await this.db
      .insertInto('identity_principals')
      .values({
        object_id: p.objectId,
        tenant_id: p.tenantId,
        type: p.type,
        display_name: p.displayName,
        app_id: p.appId ?? null,
        user_principal_name: p.userPrincipalName ?? null,
        built_in: p.builtIn ? 1 : 0,
        created_at: p.createdAt,
      })
      .execute();
  }
  async principalById(objectId: string): Promise<Principal | undefined> {
    const r = await this.db.selectFrom('identity_principals').selectAll().where('object_id', '=', objectId.toLowerCase()).executeTakeFirst();
    return r ? toPrincipal(r) : undefined;
  }
  async principalByAppId(appId: string): Promise<Principal | undefined> {
    const r = await this.db.selectFrom('identity_principals').selectAll().where('app_id', '=', appId.toLowerCase()).executeTakeFirst();
    return r ? toPrincipal(r) : undefined;
  }
  async principalByUpn(upn: string): Promise<Principal | undefined> {
    const r = await this.db.selectFrom('identity_principals').selectAll().where('user_principal_name', '=', upn.toLowerCase()).executeTakeFirst();
    return r ? toPrincipal(r) : undefined;
  }
  async listPrincipals(type?: PrincipalType): Promise<Principal[]> {
    let q = this.db.selectFrom('identity_principals').selectAll().orderBy('display_name');
    if (type) q = q.where('type', '=', type);
    return (await q.execute()).map(toPrincipal);
  }
  async addCredential(id: string, principalId: string, hash: string, displayName: string, endAt: number | null) {
    await this.db.insertInto('identity_credentials').values({ id, principal_id: principalId, secret_hash: hash, display_name: displayName, end_at: endAt, created_at: Date.now() }).execute();
  }
  async credentials(principalId: string) {
    return this.db.selectFrom('identity_credentials').selectAll().where('principal_id', '=', principalId).execute();
  }

  async insertAssignment(a: RoleAssignment, scopeNorm: string) {
    await this.db
      .insertInto('identity_role_assignments')
      .values({
        id: a.id,
        name: a.name,
        scope: a.scope,
        scope_norm: scopeNorm,
        role_definition_id: a.roleDefinitionId,
        principal_id: a.principalId,
        principal_type: a.principalType,
        created_at: a.createdAt,
      })
      .execute();
  }
  async assignmentsOf(principalId: string): Promise<RoleAssignment[]> {
    return (await this.db.selectFrom('identity_role_assignments').selectAll().where('principal_id', '=', principalId).execute()).map(toAssignment);
  }
  async allAssignments(): Promise<RoleAssignment[]> {
    return (await this.db.selectFrom('identity_role_assignments').selectAll().orderBy('created_at').execute()).map(toAssignment);
  }
  async assignmentByName(name: string): Promise<RoleAssignment | undefined> {
    const r = await this.db.selectFrom('identity_role_assignments').selectAll().where('name', '=', name.toLowerCase()).executeTakeFirst();
    return r ? toAssignment(r) : undefined;
  }
  /**
   * Deletes the assignment `name` unless it is one of `owner` (a role id at the scope `ownerScopeNorm`) and the last
   * one: 'deleted', 'absent', or 'last' (nothing deleted). Atomic in the database, so API processes sharing it cannot
   * both pass the check: the decision is one conditional DELETE whose count runs in the same statement (atomic under
   * SQLite's single writer), and on PostgreSQL it runs in a transaction that first locks the owner rows
   * (SELECT … FOR UPDATE: the second transaction waits, then counts what the first left).
   */
  async deleteAssignmentUnlessLast(name: string, owner: { roleId: string; scopeNorm: string }): Promise<'deleted' | 'absent' | 'last'> {
    const n = name.toLowerCase();
    return this.ownerChange(owner, async (db) => {
      const r = await db
        .deleteFrom('identity_role_assignments')
        .where('name', '=', n)
        .where((eb) => eb.or([eb('role_definition_id', '!=', owner.roleId), eb('scope_norm', '!=', owner.scopeNorm), eb(this.ownerCount(db, owner), '>', 1)]))
        .executeTakeFirst();
      if (Number(r.numDeletedRows) > 0) return 'deleted';
      const still = await db.selectFrom('identity_role_assignments').select('name').where('name', '=', n).executeTakeFirst();
      return still ? 'last' : 'absent';
    });
  }

  /**
   * Deletes a (non built-in) principal and all its role assignments, unless it holds the last `owner` assignment:
   * then nothing changes and 'last' is returned. Atomic as deleteAssignmentUnlessLast (one conditional DELETE of its
   * assignments decides).
   */
  async deletePrincipalUnlessLastOwner(objectId: string, owner: { roleId: string; scopeNorm: string }): Promise<'deleted' | 'absent' | 'last'> {
    return this.ownerChange(owner, async (db) => {
      const p = await db.selectFrom('identity_principals').select('object_id').where('object_id', '=', objectId).where('built_in', '=', 0).executeTakeFirst();
      if (!p) return 'absent';
      // Its assignments go only when it holds no owner assignment, or another principal still holds one.
      await db
        .deleteFrom('identity_role_assignments')
        .where('principal_id', '=', objectId)
        .where((eb) =>
          eb.or([
            eb.not(eb.exists(eb.selectFrom('identity_role_assignments as mine').select('mine.name').where('mine.principal_id', '=', objectId).where('mine.role_definition_id', '=', owner.roleId).where('mine.scope_norm', '=', owner.scopeNorm))),
            eb(this.ownerCount(db, owner, objectId), '>', 0),
          ]),
        )
        .execute();
      const left = await db.selectFrom('identity_role_assignments').select('name').where('principal_id', '=', objectId).executeTakeFirst();
      if (left) return 'last';
      await db.deleteFrom('identity_principals').where('object_id', '=', objectId).execute();
      return 'deleted';
    });
  }

  /**
   * Runs a change that may remove an owner assignment. PostgreSQL: in a transaction holding the owner rows locked.
   * SQLite: as is — its conditional DELETE is atomic on its own, and a transaction held across awaits would only
   * make other connections wait on the file lock.
   */
  private async ownerChange<T>(owner: { roleId: string; scopeNorm: string }, fn: (db: Kysely<IdentityTables>) => Promise<T>): Promise<T> {
    if (!(this.db.getExecutor().adapter instanceof PostgresAdapter)) return fn(this.db);
    return this.db.transaction().execute(async (tx) => {
      await tx.selectFrom('identity_role_assignments').select('name').where('role_definition_id', '=', owner.roleId).where('scope_norm', '=', owner.scopeNorm).forUpdate().execute();
      return fn(tx);
    });
  }

  /** (SELECT count(*) of owner assignments [of principals other than `except`]) as a subquery. */
  private ownerCount(db: Kysely<IdentityTables>, owner: { roleId: string; scopeNorm: string }, except?: string) {
    let q = db.selectFrom('identity_role_assignments as o').select((eb) => eb.fn.countAll<number>().as('n')).where('o.role_definition_id', '=', owner.roleId).where('o.scope_norm', '=', owner.scopeNorm);
    if (except !== undefined) q = q.where('o.principal_id', '!=', except);
    return q;
  }

  async deleteAssignment(name: string): Promise<boolean> {
    const r = await this.db.deleteFrom('identity_role_assignments').where('name', '=', name.toLowerCase()).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }
}
