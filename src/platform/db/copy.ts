/**
 * `rsvault admin migrate-db`: copies an embedded installation's metadata (SQLite) into an empty PostgreSQL database
 * that the same migrations created. Tables are copied in creation order (parents before the rows that reference
 * them), in batches, inside one PostgreSQL transaction: the target ends complete or untouched. Auto-numbered ids
 * continue after the copied ones. Stop the server first; the source is brought to the current schema, then only read.
 */
import { sql } from 'kysely';
import type { Database } from './index.js';

export interface CopyResult {
  tables: { name: string; rows: number }[];
}

export class MigrateDbError extends Error {
  override name = 'MigrateDbError';
}

const SKIP = new Set(['schema_migrations', 'schema_migrations_lock']);

export async function copyDatabase(from: Database, to: Database, o: { batch?: number } = {}): Promise<CopyResult> {
  if (from.dialect !== 'sqlite' || to.dialect !== 'postgres') throw new MigrateDbError('migrate-db copies a SQLite database (--from) into a PostgreSQL one (--to)');
  const batch = o.batch ?? 500;
  const tables = (await sql<{ name: string }>`select name from sqlite_master where type = 'table' and name not like 'sqlite_%' order by rowid`.execute(from.db)).rows
    .map((r) => r.name)
    .filter((n) => !SKIP.has(n));
  const src = from.db.withTables<Record<string, Record<string, unknown>>>();
  const out: CopyResult['tables'] = [];
  await to.db.transaction().execute(async (tx) => {
    const dst = tx.withTables<Record<string, Record<string, unknown>>>();
    for (const t of tables) {
      const have = await dst.selectFrom(t).select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirst();
      if (Number(have?.n ?? 0) > 0) throw new MigrateDbError(`the target table ${t} is not empty: migrate into a fresh PostgreSQL database`);
    }
    for (const t of tables) {
      let rows = 0;
      for (let off = 0; ; off += batch) {
        const chunk = await src.selectFrom(t).selectAll().orderBy(sql`rowid`).limit(batch).offset(off).execute();
        if (!chunk.length) break;
        await dst.insertInto(t).values(chunk).execute();
        rows += chunk.length;
      }
      // Auto-numbered ids (bigserial) continue after the copied ones.
      const hasId = (await sql<{ n: number }>`select count(*) as n from information_schema.columns where table_schema = current_schema() and table_name = ${t} and column_name = 'id'`.execute(tx)).rows[0]?.n;
      const seq = Number(hasId) ? (await sql<{ s: string | null }>`select pg_get_serial_sequence(${t}, 'id') as s`.execute(tx)).rows[0]?.s : null;
      if (seq) await sql`select setval(${seq}, coalesce((select max(id) from ${sql.table(t)}), 0) + 1, false)`.execute(tx);
      out.push({ name: t, rows });
    }
  });
  return { tables: out };
}
