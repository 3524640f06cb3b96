import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // 2-core CI: integration suites each start a real server; keep parallelism modest.
    maxWorkers: 2,
    reporters: ['default'],
    // RSVAULT_TEST_DB=postgres: one throwaway PostgreSQL cluster for the run; every test server gets a database in it.
    globalSetup: ['test/helpers/pg-global-setup.ts'],
  },
});
