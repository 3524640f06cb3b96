/** Storage tables (Kysely). Times are epoch ms. */
import type { Kysely } from 'kysely';
import type { Db, Migration, TrackedResourceRow } from '../platform/db/index.js';

export type StorageTables = {
  storage_accounts: TrackedResourceRow & {
    sku_json: string;
    kind: string;
    props_json: string;
    /** rsvault: the account may hold at most this many bytes (apparent file sizes); null = unlimited. */
    quota_bytes: number | null;
    key_sealed: string;
    created_at: number;
  };
};

export const storageMigrations: Migration[] = [
  {
    name: '0601_storage_initial',
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('storage_accounts')
        .addColumn('id_norm', 'text', (c) => c.primaryKey())
        .addColumn('id', 'text', (c) => c.notNull())
        .addColumn('subscription_id', 'text', (c) => c.notNull())
        .addColumn('resource_group', 'text', (c) => c.notNull())
        .addColumn('name', 'text', (c) => c.notNull().unique())
        .addColumn('location', 'text', (c) => c.notNull())
        .addColumn('tags_json', 'text', (c) => c.notNull())
        .addColumn('sku_json', 'text', (c) => c.notNull())
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('props_json', 'text', (c) => c.notNull())
        .addColumn('quota_bytes', 'bigint')
        .addColumn('key_sealed', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
    },
  },
];

export class StorageStore {
  readonly db: Kysely<StorageTables>;
  constructor(db: Db) {
    this.db = db.withTables<StorageTables>();
  }
}
