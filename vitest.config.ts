import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // End-to-end suites start real registries and agents; keep the machine from thrashing.
    maxWorkers: 2,
    // The stowd/stowctl processes tests spawn run the TypeScript source, never a dist/ left by an earlier
    // build (`npm ci` builds one through "prepare"), which would test old code.
    env: { STOWAGE_FROM_SOURCE: '1' },
  },
});
