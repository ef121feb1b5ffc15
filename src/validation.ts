import { readFile } from 'node:fs/promises';
import type { ZodError, ZodType, ZodTypeDef } from 'zod';
import { StowageError } from './errors.js';

/** A zod error as one line naming each field: "listen.port: Expected number; (root): …". */
export function describeIssues(error: ZodError, root: string): string {
  return error.issues.map((i) => `${i.path.join('.') || root}: ${i.message}`).join('; ');
}

/** Parses a configuration object; a mismatch is BAD_REQUEST "invalid <what>: <issues>". */
export function parseConfig<T>(schema: ZodType<T, ZodTypeDef, unknown>, input: unknown, what: string): T {
  const parsed = schema.safeParse(input);
  if (!parsed.success) throw new StowageError('BAD_REQUEST', `invalid ${what}: ${describeIssues(parsed.error, '(root)')}`);
  return parsed.data;
}

/** Reads a JSON configuration file and parses it with `parse`; an unreadable one names the file. */
export async function loadConfigFile<T>(path: string, what: string, parse: (raw: unknown) => T): Promise<T> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new StowageError('BAD_REQUEST', `cannot read ${what} ${path}: ${(err as Error).message}`);
  }
  return parse(raw);
}
