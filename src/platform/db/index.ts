/**
 * Metadata database: Kysely over better-sqlite3 (WAL, one writer; the embedded default) or PostgreSQL (`pg` pool,
 * for scale-out: several processes share it). Migrations are contributed by each slice (composition root collects
 * them); SQL stays portable (text ids, bigint epoch-millisecond times, integer 0/1 booleans, JSON in text columns,
 * lower-cased `*_norm` columns for case-insensitive ARM ids) so the same migrations run on both. PostgreSQL's int8
 * values come back as JS numbers (epoch ms fit in 2^53), as they do from SQLite.
 *
 * Transactions: on SQLite Kysely serialises every query through its one connection, so a transaction excludes all
 * other statements; on PostgreSQL a transaction holds one pooled connection (READ COMMITTED) while other requests
 * run. Code inside `db.transaction()` must therefore use the `tx` handle only (on SQLite using `db` would deadlock),
 * and cross-process exclusion goes through unique keys, compare-and-set updates or `platform_locks` leases, never
 * through "read, then write" outside a transaction.
 */
import SQLite from 'better-sqlite3';
import pg from 'pg';
import { Kysely, SqliteDialect, PostgresDialect, PostgresAdapter, Migrator, type CreateTableBuilder, type Migration as KyselyMigration, type MigrationProvider, sql } from 'kysely';
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

export const isPostgresUrl = (url: string): boolean => /^postgres(ql)?:\/\//i.test(url);

/** A database URL with its password replaced by `***` (for logs and errors). */
export const redactDbUrl = (url: string): string => url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');

/** True when `db` runs on PostgreSQL (migrations that need a dialect-specific type ask this). */
export function isPostgres(db: Kysely<unknown> | Db): boolean {
  return db.getExecutor().adapter instanceof PostgresAdapter;
}

export interface OpenOptions {
  /** PostgreSQL pool size (default 10). */
  poolSize?: number;
}

export function openDatabase(url: string, o: OpenOptions = {}): Database {
  if (isPostgresUrl(url)) return openPostgres(url, o);
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

const INT8_OID = 20;

function openPostgres(url: string, o: OpenOptions): Database {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new DatabaseConfigError(`invalid PostgreSQL URL '${redactDbUrl(url)}': expected postgres://user[:password]@host[:port]/database`);
  }
  if (!parsed.pathname || parsed.pathname === '/') throw new DatabaseConfigError(`PostgreSQL URL '${redactDbUrl(url)}' names no database: add /<database>`);
  const pool = new pg.Pool({
    connectionString: url,
    max: o.poolSize ?? 10,
    connectionTimeoutMillis: 10_000,
    // bigint (epoch ms, counts) as JS numbers, like SQLite returns them; every value we store fits in 2^53.
    types: { getTypeParser: ((oid: number, format?: 'text' | 'binary') => (oid === INT8_OID ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format))) as typeof pg.types.getTypeParser },
  });
  // An idle client losing its connection (server restart) must not crash the process: the pool drops it.
  pool.on('error', () => undefined);
  const db = new Kysely<{}>({ dialect: new PostgresDialect({ pool }) }); // eslint-disable-line @typescript-eslint/no-empty-object-type
  return {
    db,
    dialect: 'postgres',
    async close() {
      await db.destroy();
    },
  };
}

/** Checks the database answers (readiness probes). */
export async function ping(db: Db): Promise<void> {
  await sql`select 1`.execute(db);
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

/**
 * An auto-numbered integer primary key column: `integer primary key autoincrement` on SQLite, `bigserial primary key`
 * on PostgreSQL. Use as `.$call(autoIdColumn(db, 'id'))` in a migration.
 */
export function autoIdColumn(db: Kysely<unknown>, name: string) {
  const pgsql = isPostgres(db);
  return <TB extends string, C extends string>(t: CreateTableBuilder<TB, C>) =>
    pgsql ? t.addColumn(name, 'bigserial', (c) => c.primaryKey()) : t.addColumn(name, 'integer', (c) => c.primaryKey().autoIncrement());
}

/** True for a unique / primary-key violation (PostgreSQL 23505, SQLite SQLITE_CONSTRAINT_UNIQUE / _PRIMARYKEY). */
export function isUniqueViolation(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return code === '23505' || code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}

/**
 * Runs a create-or-update ("read; insert if absent, else update") again when its insert lost a race to a concurrent
 * request (another process on PostgreSQL, or another request of this one between its awaits): the rerun reads the
 * row the winner inserted and takes the update / conflict path. `fn` must write only in its last step (or in one
 * transaction), so a lost insert leaves nothing behind.
 */
export async function retryOnUniqueViolation<T>(fn: () => Promise<T>, attempts = 3): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (i >= attempts || !isUniqueViolation(e)) throw e;
    }
  }
}

/** Epoch milliseconds, the one time representation in tables. */
export const now = (): number => Date.now();

export { sql };
