import type { TestProject } from 'vitest/node';
import { startPostgres } from './postgres.js';

/**
 * vitest globalSetup of the `control-postgres` project: one PostgreSQL server for the whole run; each test
 * cluster makes its own database on it (postgres.ts freshDatabase). Stopped (pg_ctl stop -m fast, its temp
 * dir removed) when the run ends.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const server = await startPostgres();
  project.provide('postgresAdminUrl', server.adminUrl);
  return () => server.stop();
}
