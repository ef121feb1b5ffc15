import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Deadlines catch hangs, not slowness: the suite must pass on a loaded 2-core machine beside another run.
    testTimeout: 600_000,
    hookTimeout: 900_000,
    // End-to-end suites start real registries and agents; keep the machine from thrashing.
    maxWorkers: 2,
    // bin/stowd.js and bin/stowctl.js run the TypeScript source, never a dist/ built before the change under test.
    env: { STOWAGE_FROM_SOURCE: '1' },
    // Files in random order (none may depend on another's leftovers); tests inside a file build on each
    // other (one cluster, its state carried from test to test), so they keep their order.
    sequence: { shuffle: { files: true, tests: false } },
  },
});
