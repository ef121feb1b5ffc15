import { StowageError } from '../../errors.js';
import type { MachineRecord } from '../machines.js';

/**
 * The `target_agents` grammar of preload_image / unload_image: comma-separated terms, the union of what
 * each selects (duplicates collapse, order follows the machine list):
 *
 *   *                      every online machine
 *   label:<key>=<value>    online machines whose label <key> is <value>
 *   scaling_group:<name>   online machines of that scaling group
 *   <machine-id>           that machine, online or not (an offline one fails as a target, saying so)
 *
 * An unknown machine ID, a malformed term or a selection of no machine at all is BAD_REQUEST /
 * MACHINE_NOT_FOUND, before anything is recorded.
 */

const MAX_TERMS = 1000;
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function selectTargets(machines: readonly MachineRecord[], selector: string): string[] {
  const terms = selector
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '');
  if (terms.length === 0) throw new StowageError('BAD_REQUEST', 'target_agents is empty: use *, machine IDs, label:key=value or scaling_group:name');
  if (terms.length > MAX_TERMS) throw new StowageError('BAD_REQUEST', `target_agents has more than ${MAX_TERMS} terms`);
  const chosen = new Set<string>();
  const unknown: string[] = [];
  const online = machines.filter((m) => m.status === 'online');
  for (const term of terms) {
    if (term === '*') {
      for (const m of online) chosen.add(m.id);
    } else if (term.startsWith('label:')) {
      const body = term.slice('label:'.length);
      const eq = body.indexOf('=');
      if (eq <= 0) throw new StowageError('BAD_REQUEST', `invalid target term "${term}": expected label:key=value`);
      const key = body.slice(0, eq);
      const value = body.slice(eq + 1);
      for (const m of online) if (m.labels[key] === value) chosen.add(m.id);
    } else if (term.startsWith('scaling_group:')) {
      const name = term.slice('scaling_group:'.length);
      if (name === '') throw new StowageError('BAD_REQUEST', `invalid target term "${term}": expected scaling_group:name`);
      for (const m of online) if (m.scaling_group === name) chosen.add(m.id);
    } else if (ID_RE.test(term)) {
      if (machines.some((m) => m.id === term)) chosen.add(term);
      else unknown.push(term);
    } else {
      throw new StowageError('BAD_REQUEST', `invalid target term "${term.slice(0, 100)}": use *, a machine ID, label:key=value or scaling_group:name`);
    }
  }
  if (unknown.length > 0) {
    throw new StowageError('MACHINE_NOT_FOUND', `no machine ${unknown.map((id) => `"${id}"`).join(', ')}`, { details: { machine_ids: unknown } });
  }
  const ordered = machines.map((m) => m.id).filter((id) => chosen.has(id));
  if (ordered.length === 0) throw new StowageError('BAD_REQUEST', `target_agents "${selector.slice(0, 200)}" selects no online machine`);
  return ordered;
}
