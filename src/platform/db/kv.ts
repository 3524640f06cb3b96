/** Installation settings: a tiny key/value table owned by the platform (ids created at first start, etc.). */
import type { Kysely } from 'kysely';
import type { Db, Migration } from './index.js';

type SettingsTables = {
  platform_settings: { key: string; value: string };
}

export const platformMigrations: Migration[] = [
  {
    name: '0001_platform_settings',
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('platform_settings')
        .addColumn('key', 'text', (c) => c.primaryKey())
        .addColumn('value', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('platform_operations')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('resource_id', 'text')
        .addColumn('error_json', 'text')
        .addColumn('result_json', 'text')
        .addColumn('started_at', 'bigint', (c) => c.notNull())
        .addColumn('ended_at', 'bigint')
        .execute();
    },
  },
];

export class Settings {
  private readonly db: Kysely<SettingsTables>;
  constructor(db: Db) {
    this.db = db.withTables<SettingsTables>();
  }
  async get(key: string): Promise<string | undefined> {
    const row = await this.db.selectFrom('platform_settings').select('value').where('key', '=', key).executeTakeFirst();
    return row?.value;
  }
  async set(key: string, value: string): Promise<void> {
    await this.db
      .insertInto('platform_settings')
      .values({ key, value })
      .onConflict((oc) => oc.column('key').doUpdateSet({ value }))
      .execute();
  }
}
