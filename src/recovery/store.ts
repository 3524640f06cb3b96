/** Recovery Services tables (Kysely). Times are epoch ms; echoed-only ARM properties live in JSON columns. */
import type { Kysely } from 'kysely';
import { trackedResourceColumns, type Db, type Migration, type TrackedResourceRow } from '../platform/db/index.js';

export type RecoveryTables = {
  recovery_vaults: TrackedResourceRow & {
    sku_json: string;
    identity_json: string | null;
    props_json: string;
    etag: string;
    uid: string;
    storage_type: string;
    cross_region_restore: number;
    soft_delete: string;
    enhanced_security: string;
    bek_only: string;
    store_keys: string;
    created_at: number;
    updated_at: number;
  };
  recovery_policies: {
    vault_norm: string;
    name_norm: string;
    name: string;
    props_json: string;
    created_at: number;
    updated_at: number;
  };
  recovery_items: {
    id_norm: string;
    vault_norm: string;
    vm_id: string;
    vm_rg: string;
    vm_name: string;
    classic: number;
    policy_name: string | null;
    protection_state: string;
    last_backup_status: string;
    last_backup_time: number | null;
    last_rp_id: string | null;
    health_json: string | null;
    extended_json: string;
    deferred_delete_at: number | null;
    created_at: number;
    updated_at: number;
  };
  recovery_jobs: {
    id: string;
    vault_norm: string;
    item_norm: string | null;
    op_id: string | null;
    trigger_key: string | null;
    operation: string;
    status: string;
    friendly_name: string;
    container_name: string;
    user_triggered: number;
    start_time: number;
    end_time: number | null;
    error_json: string | null;
    tasks_json: string;
    bag_json: string;
    params_json: string;
    progress: number;
    cancel_requested: number;
  };
  recovery_points: {
    id: string;
    vault_norm: string;
    item_norm: string;
    job_id: string;
    time: number;
    expiry: number;
    rule: string;
    rp_type: string;
    disks_json: string;
    vm_json: string;
    encrypted: number;
    keys_sealed: string | null;
    encryption_mechanism: string;
    size_bytes: number;
    created_at: number;
  };
  /** The vault's backupResourceEncryptionConfig (absent row = platform-managed keys, never changed). */
  recovery_encryption_configs: {
    vault_norm: string;
    at_rest_type: string;
    key_uri: string | null;
    key_subscription_id: string | null;
    infrastructure_state: string;
    user_assigned_identity: string | null;
    use_system_assigned_identity: number | null;
    last_update_status: string;
    updated_at: number;
  };
};

export const recoveryMigrations: Migration[] = [
  {
    name: '0501_recovery_initial',
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('recovery_vaults')
        .$call(trackedResourceColumns)
        .addColumn('sku_json', 'text', (c) => c.notNull())
        .addColumn('identity_json', 'text')
        .addColumn('props_json', 'text', (c) => c.notNull())
        .addColumn('etag', 'text', (c) => c.notNull())
        .addColumn('uid', 'text', (c) => c.notNull().unique())
        .addColumn('storage_type', 'text', (c) => c.notNull())
        .addColumn('cross_region_restore', 'integer', (c) => c.notNull())
        .addColumn('soft_delete', 'text', (c) => c.notNull())
        .addColumn('enhanced_security', 'text', (c) => c.notNull())
        .addColumn('bek_only', 'text', (c) => c.notNull())
        .addColumn('store_keys', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('recovery_policies')
        .addColumn('vault_norm', 'text', (c) => c.notNull())
        .addColumn('name_norm', 'text', (c) => c.notNull())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('props_json', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('recovery_policies_pk', ['vault_norm', 'name_norm'])
        .execute();
      await db.schema
        .createTable('recovery_items')
        .addColumn('id_norm', 'text', (c) => c.primaryKey())
        .addColumn('vault_norm', 'text', (c) => c.notNull())
        .addColumn('vm_id', 'text', (c) => c.notNull())
        .addColumn('vm_rg', 'text', (c) => c.notNull())
        .addColumn('vm_name', 'text', (c) => c.notNull())
        .addColumn('classic', 'integer', (c) => c.notNull())
        .addColumn('policy_name', 'text')
        .addColumn('protection_state', 'text', (c) => c.notNull())
        .addColumn('last_backup_status', 'text', (c) => c.notNull())
        .addColumn('last_backup_time', 'bigint')
        .addColumn('last_rp_id', 'text')
        .addColumn('health_json', 'text')
        .addColumn('extended_json', 'text', (c) => c.notNull())
        .addColumn('deferred_delete_at', 'bigint')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('recovery_items_vault').on('recovery_items').column('vault_norm').execute();
      await db.schema
        .createTable('recovery_jobs')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('vault_norm', 'text', (c) => c.notNull())
        .addColumn('item_norm', 'text')
        .addColumn('op_id', 'text')
        .addColumn('trigger_key', 'text', (c) => c.unique())
        .addColumn('operation', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('friendly_name', 'text', (c) => c.notNull())
        .addColumn('container_name', 'text', (c) => c.notNull())
        .addColumn('user_triggered', 'integer', (c) => c.notNull())
        .addColumn('start_time', 'bigint', (c) => c.notNull())
        .addColumn('end_time', 'bigint')
        .addColumn('error_json', 'text')
        .addColumn('tasks_json', 'text', (c) => c.notNull())
        .addColumn('bag_json', 'text', (c) => c.notNull())
        .addColumn('params_json', 'text', (c) => c.notNull())
        .addColumn('progress', 'real', (c) => c.notNull())
        .addColumn('cancel_requested', 'integer', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('recovery_jobs_vault').on('recovery_jobs').columns(['vault_norm', 'start_time']).execute();
      await db.schema.createIndex('recovery_jobs_op').on('recovery_jobs').column('op_id').execute();
      await db.schema
        .createTable('recovery_points')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('vault_norm', 'text', (c) => c.notNull())
        .addColumn('item_norm', 'text', (c) => c.notNull())
        .addColumn('job_id', 'text', (c) => c.notNull().unique())
        .addColumn('time', 'bigint', (c) => c.notNull())
        .addColumn('expiry', 'bigint', (c) => c.notNull())
        .addColumn('rule', 'text', (c) => c.notNull())
        .addColumn('rp_type', 'text', (c) => c.notNull())
        .addColumn('disks_json', 'text', (c) => c.notNull())
        .addColumn('vm_json', 'text', (c) => c.notNull())
        .addColumn('encrypted', 'integer', (c) => c.notNull())
        .addColumn('keys_sealed', 'text')
        .addColumn('encryption_mechanism', 'text', (c) => c.notNull())
        .addColumn('size_bytes', 'bigint', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('recovery_points_item').on('recovery_points').columns(['item_norm', 'time']).execute();
    },
  },
  {
    name: '0502_recovery_encryption_configs',
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('recovery_encryption_configs')
        .addColumn('vault_norm', 'text', (c) => c.primaryKey())
        .addColumn('at_rest_type', 'text', (c) => c.notNull())
        .addColumn('key_uri', 'text')
        .addColumn('key_subscription_id', 'text')
        .addColumn('infrastructure_state', 'text', (c) => c.notNull())
        .addColumn('user_assigned_identity', 'text')
        .addColumn('use_system_assigned_identity', 'integer')
        .addColumn('last_update_status', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .execute();
    },
  },
];

export class RecoveryStore {
  readonly db: Kysely<RecoveryTables>;
  constructor(db: Db) {
    this.db = db.withTables<RecoveryTables>();
  }
}
