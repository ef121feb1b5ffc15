import { defineConfig } from 'vitest/config';

/**
 * The control-plane test files run a second time with their state in a real PostgreSQL 15 (project
 * `control-postgres`: STOWAGE_TEST_DATABASE=postgres, one server for the run, a fresh database per control
 * plane; test/harness/postgres.ts). STOWAGE_TEST_POSTGRES=0 leaves it out (a machine without PostgreSQL).
 */
const POSTGRES_PROJECT_ENABLED = true;
const runOnPostgres = process.env['STOWAGE_TEST_POSTGRES'] ? process.env['STOWAGE_TEST_POSTGRES'] === '1' : POSTGRES_PROJECT_ENABLED;

/**
 * The files whose subject is control-plane state, each store covered: machines, availability, operations,
 * catalog, tenancy, auth (API keys, keypairs, revocations), background tasks. Left out: files about agents,
 * the engine, archives, the registry and runtimes (no control-plane state), and those about SQLite's own
 * file (control/disk-full-state: a full disk under control.db; security/secrets-at-rest: the bytes of
 * control.db, with a PostgreSQL case of its own (a pg_dump); cluster/recovery: control.db deleted or rolled
 * back). Files made for PostgreSQL (cluster/replicas, control/event-bus) start a server of their own when
 * run outside this project.
 */
const CONTROL_PLANE_FILES = [
  // In-process control planes: the stores behind REST, GraphQL and the Backend.AI surface.
  'test/control/bai-compat.test.ts',
  'test/control/blob-sources.test.ts',
  'test/control/catalog-aliases.test.ts',
  'test/control/catalog-cli.test.ts',
  'test/control/catalog-preload.test.ts',
  'test/control/catalog-rescan.test.ts',
  'test/control/catalog-scan.test.ts',
  'test/control/fanout-chain.test.ts',
  'test/control/graphql-input.test.ts',
  'test/control/graphql-limits.test.ts',
  'test/control/graphql-tenancy.test.ts',
  'test/control/heartbeat-route.test.ts',
  'test/control/leases.test.ts',
  'test/control/rest-roles.test.ts',
  'test/control/state.test.ts',
  'test/control/tasks-sse.test.ts',
  // Clusters of real processes: machines, availability and operations through joins, reports, restarts and faults.
  'test/cluster/catalog.test.ts',
  'test/cluster/distribute.test.ts',
  'test/cluster/faults.test.ts',
  'test/cluster/metrics.test.ts',
  'test/cluster/restart.test.ts',
  'test/cluster/stowctl.test.ts',
  // Refusals that must change nothing in the store, and revocations kept in it.
  'test/security/input-schemas.test.ts',
  'test/security/revocation.test.ts',
];

export default defineConfig({
  test: {
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
    projects: [
      { extends: true, test: { name: 'default', include: ['test/**/*.test.ts'] } },
      ...(runOnPostgres
        ? [
            {
              extends: true as const,
              test: {
                name: 'control-postgres',
                include: CONTROL_PLANE_FILES,
                env: { STOWAGE_FROM_SOURCE: '1', STOWAGE_TEST_DATABASE: 'postgres' },
                globalSetup: ['test/harness/postgres-global-setup.ts'],
              },
            },
          ]
        : []),
    ],
  },
});
