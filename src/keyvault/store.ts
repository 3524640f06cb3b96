/**
 * Key Vault tables (Kysely). Queried/enforced things are columns (names, states, times); ARM properties that are
 * only echoed back live in `props_json`. Private keys and secret values are in `sealed` (AES-256-GCM under the
 * installation master key, see platform/crypto.ts) — never in clear.
 */
import type { Generated, Kysely, Selectable } from 'kysely';
import { autoIdColumn, type Db, type Migration, type TrackedResourceRow } from '../platform/db/index.js';

export type KeyVaultTables = {
  keyvault_vaults: TrackedResourceRow & {
    name_norm: string;
    props_json: string;
    state: string;
    created_at: number;
    updated_at: number;
    deleted_at: number | null;
    purge_at: number | null;
  };
  keyvault_objects: {
    id: string;
    vault_norm: string;
    kind: string;
    name: string;
    name_norm: string;
    state: string;
    deleted_at: number | null;
    purge_at: number | null;
  };
  keyvault_versions: {
    id: string;
    object_id: string;
    version: string;
    seq: number;
    meta_json: string;
    sealed: string;
    attributes_json: string;
    tags_json: string | null;
    created_at: number;
    updated_at: number;
  };
  keyvault_audit: {
    id: Generated<number>;
    at: number;
    vault_norm: string;
    caller_oid: string;
    caller_appid: string | null;
    operation: string;
    object: string | null;
    status: number;
    result: string;
  };
};

export type VaultRow = Selectable<KeyVaultTables['keyvault_vaults']>;
export type ObjectRow = Selectable<KeyVaultTables['keyvault_objects']>;
export type VersionRow = Selectable<KeyVaultTables['keyvault_versions']>;
export type AuditRow = Selectable<KeyVaultTables['keyvault_audit']>;

export const keyvaultMigrations: Migration[] = [
  {
    name: '0301_keyvault_init',
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('keyvault_vaults')
        .addColumn('id_norm', 'text', (c) => c.primaryKey())
        .addColumn('id', 'text', (c) => c.notNull())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('name_norm', 'text', (c) => c.notNull().unique())
        .addColumn('subscription_id', 'text', (c) => c.notNull())
        .addColumn('resource_group', 'text', (c) => c.notNull())
        .addColumn('location', 'text', (c) => c.notNull())
        .addColumn('tags_json', 'text', (c) => c.notNull())
        .addColumn('props_json', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .addColumn('deleted_at', 'bigint')
        .addColumn('purge_at', 'bigint')
        .execute();
      await db.schema.createIndex('keyvault_vaults_sub').on('keyvault_vaults').columns(['subscription_id', 'resource_group']).execute();
      await db.schema
        .createTable('keyvault_objects')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('vault_norm', 'text', (c) => c.notNull())
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('name_norm', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('deleted_at', 'bigint')
        .addColumn('purge_at', 'bigint')
        .execute();
      await db.schema.createIndex('keyvault_objects_vault').on('keyvault_objects').columns(['vault_norm', 'kind', 'state']).execute();
      await db.schema
        .createTable('keyvault_versions')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('object_id', 'text', (c) => c.notNull().references('keyvault_objects.id').onDelete('cascade'))
        .addColumn('version', 'text', (c) => c.notNull())
        .addColumn('seq', 'integer', (c) => c.notNull())
        .addColumn('meta_json', 'text', (c) => c.notNull())
        .addColumn('sealed', 'text', (c) => c.notNull())
        .addColumn('attributes_json', 'text', (c) => c.notNull())
        .addColumn('tags_json', 'text')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('keyvault_versions_object').on('keyvault_versions').columns(['object_id', 'seq']).execute();
      await db.schema
        .createTable('keyvault_audit')
        .$call(autoIdColumn(db, 'id'))
        .addColumn('at', 'bigint', (c) => c.notNull())
        .addColumn('vault_norm', 'text', (c) => c.notNull())
        .addColumn('caller_oid', 'text', (c) => c.notNull())
        .addColumn('caller_appid', 'text')
        .addColumn('operation', 'text', (c) => c.notNull())
        .addColumn('object', 'text')
        .addColumn('status', 'integer', (c) => c.notNull())
        .addColumn('result', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('keyvault_audit_vault').on('keyvault_audit').columns(['vault_norm', 'id']).execute();
    },
  },
];

export const objectIdOf = (vaultNorm: string, kind: string, name: string) => `${vaultNorm}/${kind}/${name.toLowerCase()}`;

export class KeyVaultStore {
  readonly db: Kysely<KeyVaultTables>;
  constructor(db: Db) {
    this.db = db.withTables<KeyVaultTables>();
  }

  vaultByName(name: string) {
    return this.db.selectFrom('keyvault_vaults').selectAll().where('name_norm', '=', name.toLowerCase()).executeTakeFirst();
  }
  vaultById(id: string) {
    return this.db.selectFrom('keyvault_vaults').selectAll().where('id_norm', '=', id.toLowerCase()).executeTakeFirst();
  }

  object(vaultNorm: string, kind: string, name: string) {
    return this.db.selectFrom('keyvault_objects').selectAll().where('id', '=', objectIdOf(vaultNorm, kind, name)).executeTakeFirst();
  }
  objects(vaultNorm: string, kind: string, state: 'active' | 'deleted') {
    return this.db.selectFrom('keyvault_objects').selectAll().where('vault_norm', '=', vaultNorm).where('kind', '=', kind).where('state', '=', state).orderBy('name_norm').execute();
  }
  /** Versions, newest first. */
  versions(objectId: string) {
    return this.db.selectFrom('keyvault_versions').selectAll().where('object_id', '=', objectId).orderBy('seq', 'desc').execute();
  }
  latest(objectId: string) {
    return this.db.selectFrom('keyvault_versions').selectAll().where('object_id', '=', objectId).orderBy('seq', 'desc').limit(1).executeTakeFirst();
  }
  version(objectId: string, version: string) {
    return this.db.selectFrom('keyvault_versions').selectAll().where('id', '=', `${objectId}/${version.toLowerCase()}`).executeTakeFirst();
  }

  async audit(row: Omit<AuditRow, 'id'>): Promise<void> {
    await this.db.insertInto('keyvault_audit').values(row).execute();
  }
  auditOf(vaultNorm: string, limit: number, beforeId?: number) {
    let q = this.db.selectFrom('keyvault_audit').selectAll().where('vault_norm', '=', vaultNorm);
    if (beforeId !== undefined) q = q.where('id', '<', beforeId);
    return q.orderBy('id', 'desc').limit(limit).execute();
  }
}
