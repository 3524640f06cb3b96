/** The db layer on both engines: the same migrations, upserts, auto ids, int8 as numbers, URL checks. */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import type { Generated, Kysely } from 'kysely';
import { openDatabase, migrate, autoIdColumn, isPostgres, ping, redactDbUrl, DatabaseConfigError, type Database, type Migration } from './index.js';
import { platformMigrations, Settings } from './kv.js';
import { startPostgres, type PgCluster } from '../../../test/helpers/postgres.js';

let cluster: PgCluster | undefined;
beforeAll(async () => {
  cluster = await startPostgres();
});
afterAll(async () => {
  await cluster?.stop();
});

const testMigration: Migration = {
  name: '9999_test_table',
  async up(db: Kysely<unknown>) {
    await db.schema.createTable('t_auto').$call(autoIdColumn(db, 'id')).addColumn('at', 'bigint', (c) => c.notNull()).addColumn('flag', 'integer', (c) => c.notNull()).execute();
  },
};
type T = { t_auto: { id: Generated<number>; at: number; flag: number } };

describe('openDatabase', () => {
  it('refuses a PostgreSQL URL without a database, without echoing the password', () => {
    expect(() => openDatabase('postgres://u:secret@127.0.0.1:1/')).toThrow(DatabaseConfigError);
    expect(() => openDatabase('postgres://u:secret@127.0.0.1:1/')).not.toThrow(/secret/);
    expect(redactDbUrl('postgres://u:secret@h:5/db')).toBe('postgres://u:***@h:5/db');
  });
});

describe.each(['sqlite', 'postgres'] as const)('%s', (engine) => {
  let d: Database;
  beforeAll(async () => {
    d = openDatabase(engine === 'postgres' ? await cluster!.createDatabase('dbtest') : ':memory:');
  });
  afterAll(async () => {
    await d?.close();
  });

  it('runs the same migrations once; settings upsert; auto ids and bigint epoch ms come back as numbers', async () => {
    expect(d.dialect).toBe(engine);
    expect(isPostgres(d.db)).toBe(engine === 'postgres');
    await ping(d.db);
    expect(await migrate(d.db, [...platformMigrations, testMigration])).toEqual(['0001_platform_settings', '9999_test_table']);
    expect(await migrate(d.db, [...platformMigrations, testMigration])).toEqual([]);
    const s = new Settings(d.db);
    await s.set('k', 'v1');
    await s.set('k', 'v2');
    expect(await s.get('k')).toBe('v2');
    const db = d.db.withTables<T>();
    const big = Date.UTC(2099, 0, 1);
    await db.insertInto('t_auto').values({ at: big, flag: 1 }).execute();
    await db.insertInto('t_auto').values({ at: big + 1, flag: 0 }).execute();
    const rows = await db.selectFrom('t_auto').selectAll().orderBy('id').execute();
    expect(rows).toEqual([{ id: 1, at: big, flag: 1 }, { id: 2, at: big + 1, flag: 0 }]);
    const n = await db.selectFrom('t_auto').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirst();
    expect(n?.n).toBe(2);
  });

  it('a transaction that throws leaves nothing; concurrent transactions each commit', async () => {
    const db = d.db.withTables<T>();
    await expect(db.transaction().execute(async (tx) => {
      await tx.insertInto('t_auto').values({ at: 1, flag: 9 }).execute();
      throw new Error('boom');
    })).rejects.toThrow('boom');
    expect(await db.selectFrom('t_auto').select('id').where('flag', '=', 9).execute()).toEqual([]);
    await Promise.all(Array.from({ length: 8 }, (_, i) => db.transaction().execute(async (tx) => {
      await tx.insertInto('t_auto').values({ at: i, flag: 7 }).execute();
    })));
    expect((await db.selectFrom('t_auto').select('id').where('flag', '=', 7).execute()).length).toBe(8);
  });
});
