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
  },
});
