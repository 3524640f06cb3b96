/** Resource groups and the resource index (every ARM resource any slice creates, for generic listing). */
import type { Kysely } from 'kysely';
import type { Db, Migration } from '../platform/db/index.js';

export type ResourceTables = {
  resource_groups: { id_norm: string; subscription_id: string; name: string; location: string; tags_json: string; managed_by: string | null; state: string; created_at: number };
  resource_index: { id_norm: string; id: string; subscription_id: string; resource_group: string; type: string; name: string; location: string; tags_json: string; created_at: number };
}

export const resourceMigrations: Migration[] = [
  {
    name: '0201_resources_init',
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('resource_groups')
        .addColumn('id_norm', 'text', (c) => c.primaryKey())
        .addColumn('subscription_id', 'text', (c) => c.notNull())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('location', 'text', (c) => c.notNull())
        .addColumn('tags_json', 'text', (c) => c.notNull())
        .addColumn('managed_by', 'text')
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('resource_index')
        .addColumn('id_norm', 'text', (c) => c.primaryKey())
        .addColumn('id', 'text', (c) => c.notNull())
        .addColumn('subscription_id', 'text', (c) => c.notNull())
        .addColumn('resource_group', 'text', (c) => c.notNull())
        .addColumn('type', 'text', (c) => c.notNull())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('location', 'text', (c) => c.notNull())
        .addColumn('tags_json', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('resource_index_rg').on('resource_index').columns(['subscription_id', 'resource_group']).execute();
    },
  },
];

export type ResourceGroupRow = ResourceTables['resource_groups'];
export type IndexedResource = ResourceTables['resource_index'];

export class ResourceStore {
  readonly db: Kysely<ResourceTables>;
  constructor(db: Db) {
    this.db = db.withTables<ResourceTables>();
  }
}
