import type { Availability } from '../control/wire.js';
import { machineStatuses } from '../control/wire-values.js';
import type { CheckIssue, ResponseCheck } from './http.js';

/**
 * The answer of GET /api/v1/images/status, checked without zod: `image status` is the command run most
 * often, and loading the schema library costs it more than the request does. It checks every field the
 * table and the templates read; wire.ts's availabilitySchema stays the contract (the server uses it).
 */

const PRESENCE_STATES = new Set(['present', 'transferring', 'absent', 'failed']);
const MACHINE_STATUSES = new Set<string>(machineStatuses);

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function recordIssue(r: unknown, at: Array<string | number>): CheckIssue | undefined {
  if (!isObject(r)) return { path: at, message: 'Expected object' };
  for (const key of ['machine_id', 'digest', 'platform', 'updated_at']) {
    if (typeof r[key] !== 'string') return { path: [...at, key], message: 'Expected string' };
  }
  for (const key of ['index_digest', 'config_digest']) {
    if (r[key] !== null && typeof r[key] !== 'string') return { path: [...at, key], message: 'Expected string or null' };
  }
  if (typeof r['size_bytes'] !== 'number' || !Number.isSafeInteger(r['size_bytes']) || r['size_bytes'] < 0) {
    return { path: [...at, 'size_bytes'], message: 'Expected a byte count' };
  }
  const refs = r['references'];
  if (!Array.isArray(refs) || refs.some((x) => typeof x !== 'string')) return { path: [...at, 'references'], message: 'Expected an array of strings' };
  const presence = r['presence'];
  if (!isObject(presence) || typeof presence['state'] !== 'string' || !PRESENCE_STATES.has(presence['state'])) {
    return { path: [...at, 'presence', 'state'], message: 'Expected present, transferring, absent or failed' };
  }
  if (typeof r['machine_status'] !== 'string' || !MACHINE_STATUSES.has(r['machine_status'])) {
    return { path: [...at, 'machine_status'], message: `Expected ${machineStatuses.join(', ')}` };
  }
  return undefined;
}

function statusIssue(value: unknown): CheckIssue | undefined {
  if (!isObject(value)) return { path: [], message: 'Expected object' };
  const records = value['records'];
  if (!Array.isArray(records)) return { path: ['records'], message: 'Expected array' };
  for (let i = 0; i < records.length; i++) {
    const issue = recordIssue(records[i], ['records', i]);
    if (issue) return issue;
  }
  return undefined;
}

export const statusResponseCheck: ResponseCheck<{ records: Availability[] }> = {
  _output: undefined as unknown as { records: Availability[] },
  safeParse(value) {
    const issue = statusIssue(value);
    return issue ? { success: false, error: { issues: [issue] } } : { success: true };
  },
};
