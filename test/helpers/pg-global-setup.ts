/**
 * vitest global setup: with RSVAULT_TEST_DB=postgres, one throwaway PostgreSQL cluster serves the whole run (each
 * test server gets its own database in it, see testDatabaseUrl); without it, nothing happens.
 */
import { startPostgres, testOnPostgres, type PgCluster } from './postgres.js';

let cluster: PgCluster | undefined;

export async function setup(): Promise<void> {
  if (!testOnPostgres()) return;
  cluster = await startPostgres();
  // Inherited by the test workers (forks), which the pool starts after the global setup.
  process.env.RSVAULT_TEST_PG_URL = cluster.url();
}

export async function teardown(): Promise<void> {
  await cluster?.stop();
}
