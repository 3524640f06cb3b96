/**
 * Metadata database: Kysely over better-sqlite3 (WAL, one writer) — PostgreSQL arrives with scale-out.
 * Migrations are contributed by each slice (composition root collects them); SQL stays portable
 * (text ids, integer epoch-millisecond times, JSON in text columns) so the same migrations run on PostgreSQL.
 */
import SQLite from 'better-sqlite3';
import { Kysely, SqliteDialect, Migrator, type CreateTableBuilder, type Migration as KyselyMigration, type MigrationProvider, sql } from 'kysely';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import path from 'node:path';

/** The database handle slices receive; each slice narrows it with `db.withTables<ItsTables>()`. */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type -- the empty schema is widened per slice with withTables()
export type Db = Kysely<{}>;

export interface Migration {
  /** Globally unique, sortable: `NNNN_slice_description`. */
  name: string;
  up(db: Kysely<unknown>): Promise<void>;
}

export interface Database {
  db: Db;
  dialect: 'sqlite' | 'postgres';
  close(): Promise<void>;
}

export class DatabaseConfigError extends Error {
  override name = 'DatabaseConfigError';
}

export function openDatabase(url: string): Database {
  if (/^postgres(ql)?:\/\//i.test(url)) {
    throw new DatabaseConfigError('PostgreSQL metadata is not available in this build yet; use a SQLite path (the default)');
  }
  mkdirSync(path.dirname(path.resolve(url)), { recursive: true, mode: 0o700 });
  // Owner-only: SQLite gives the -wal and -shm files the database file's mode, so creating it 0600 covers all three.
  if (url !== ':memory:') {
    closeSync(openSync(url, 'a', 0o600));
    for (const f of [url, `${url}-wal`, `${url}-shm`]) if (existsSync(f)) chmodSync(f, 0o600);
  }
  const sqlite = new SQLite(url);
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('foreign_keys = ON');
  sqlite.pragma('busy_timeout = 5000');
  const db = new Kysely<{}>({ dialect: new SqliteDialect({ database: sqlite }) }); // eslint-disable-line @typescript-eslint/no-empty-object-type
  return {
    db,
    dialect: 'sqlite',
    async close() {
      await db.destroy();
    },
  };
}

export async function migrate(db: Db, migrations: Migration[]): Promise<string[]> {
  const names = new Set<string>();
  for (const m of migrations) {
    if (names.has(m.name)) throw new Error(`duplicate migration name ${m.name}`);
    names.add(m.name);
  }
  const provider: MigrationProvider = {
    async getMigrations() {
      const out: Record<string, KyselyMigration> = {};
      for (const m of migrations) out[m.name] = { up: (k) => m.up(k) };
      return out;
    },
  };
  const migrator = new Migrator({ db, provider, allowUnorderedMigrations: true, migrationTableName: 'schema_migrations', migrationLockTableName: 'schema_migrations_lock' });
  const { error, results } = await migrator.migrateToLatest();
  if (error) throw error instanceof Error ? error : new Error(String(error));
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}

/**
 * The columns every tracked ARM resource table starts with (use with `.$call(trackedResourceColumns)`):
 * `id_norm` (primary key, the lower-cased ARM id), `id` (as created), `subscription_id`, `resource_group`
 * (lower-cased), `name`, `location`, `tags_json`.
 */
/** The row fields `trackedResourceColumns` creates, for the table types of the slices. */
export interface TrackedResourceRow {
  id_norm: string;
  id: string;
  subscription_id: string;
  resource_group: string;
  name: string;
  location: string;
  tags_json: string;
}

export function trackedResourceColumns<TB extends string, C extends string>(t: CreateTableBuilder<TB, C>) {
  return t
    .addColumn('id_norm', 'text', (c) => c.primaryKey())
    .addColumn('id', 'text', (c) => c.notNull())
    .addColumn('subscription_id', 'text', (c) => c.notNull())
    .addColumn('resource_group', 'text', (c) => c.notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('location', 'text', (c) => c.notNull())
    .addColumn('tags_json', 'text', (c) => c.notNull());
}

/** Epoch milliseconds, the one time representation in tables. */
export const now = (): number => Date.now();

export { sql };
