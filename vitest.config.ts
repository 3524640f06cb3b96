import { configDefaults, defineConfig } from 'vitest/config';

/** Suites that need PostgreSQL whatever the project (they start or use a cluster themselves): only in `postgres`. */
const postgresOnly = ['test/postgres.test.ts', 'test/scale-out.test.ts', 'test/scale-out-scheduler.test.ts', 'test/scale-out-api.test.ts'];

/**
 * The server suites that exercise the metadata database most (transactions, unique keys, leases, scheduler slots,
 * role assignments, recovery points), run a second time on PostgreSQL. Chosen to keep the `postgres` project's
 * share of a CI run within ~5 minutes of file time on a 2-core machine (README "Tests").
 */
const onBothDatabases = [
  'test/foundation.test.ts',
  'test/security-authz.test.ts',
  'test/security-authz-followup.test.ts',
  'test/recovery.test.ts',
  'test/restore.test.ts',
  'test/integrity.test.ts',
  'test/recovery-schedule.test.ts',
  'test/keyvault.test.ts',
];

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // 2-core CI: integration suites each start a real server; keep parallelism modest.
    maxWorkers: 2,
    reporters: ['default'],
    // `npm test` runs both projects; failures are labelled with theirs (`|sqlite|`, `|postgres|`).
    projects: [
      {
        extends: true,
        test: {
          name: 'sqlite',
          include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
          exclude: [...configDefaults.exclude, ...postgresOnly],
          // Starts a cluster only when RSVAULT_TEST_DB=postgres is set by hand (the whole selection on PostgreSQL).
          globalSetup: ['test/helpers/pg-global-setup.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'postgres',
          include: [...postgresOnly, ...onBothDatabases],
          env: { RSVAULT_TEST_DB: 'postgres' },
          // One throwaway PostgreSQL cluster for the project; every test server gets a fresh database in it.
          globalSetup: ['test/helpers/pg-global-setup.ts'],
        },
      },
    ],
  },
});
