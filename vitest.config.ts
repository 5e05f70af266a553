import { defineConfig } from 'vitest/config';

// Integration tests start real PostgreSQL clusters and S3-compatible servers; on a 2-core machine
// running every file at once only makes them time out, so files run two at a time.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    globalSetup: ['test/global-setup.ts'],
  },
});
