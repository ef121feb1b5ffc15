import { type RawBuilder, sql } from 'kysely';

/**
 * `(v1, v2, …)` for `x IN ${inList(values)}`. The list is padded (repeating its last value) to a power of
 * two, so the few lengths give few SQL texts and the statements compiled for them are reused. Callers
 * handle an empty list themselves (`IN ()` is not SQL).
 */
export function inList(values: readonly unknown[]): RawBuilder<unknown> {
  if (values.length === 0) throw new Error('inList: an empty list');
  let size = 1;
  while (size < values.length) size *= 2;
  const padded = [...values];
  while (padded.length < size) padded.push(values[values.length - 1]);
  return sql`(${sql.join(padded)})`;
}
