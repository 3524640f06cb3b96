/**
 * vitest global setup, per project: when the project's tests run on PostgreSQL (the `postgres` project's env, or
 * RSVAULT_TEST_DB=postgres set by hand), one throwaway PostgreSQL cluster serves the project's whole run (each test
 * server gets its own database in it, see testDatabaseUrl); otherwise nothing happens.
 */
import type { TestProject } from 'vitest/node';
import { startPostgres, testOnPostgres } from './postgres.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Base URL (`postgres://…/postgres`) of the project's test cluster; '' when the project runs on SQLite. */
    rsvaultTestPgUrl: string;
  }
}

export async function setup(project: TestProject): Promise<(() => Promise<void>) | undefined> {
  project.provide('rsvaultTestPgUrl', '');
  if (!testOnPostgres(project.config.env?.RSVAULT_TEST_DB ?? process.env.RSVAULT_TEST_DB)) return undefined;
  const cluster = await startPostgres();
  // Handed to this project's test workers only (inject), so a second project's cluster does not overwrite it.
  project.provide('rsvaultTestPgUrl', cluster.url());
  return () => cluster.stop();
}
