import { parsePlatform } from '../oci/platform.js';
import { usageError } from './errors.js';

/**
 * Option parsers for commander: each checks its value locally, with the same rules as the wire
 * schemas (src/control/wire.ts), so a malformed flag fails with exit 2 before anything is sent.
 * They throw CliErrors (not commander's InvalidArgumentError), which commander passes through, so the
 * code (INVALID_DIGEST, …) reaches --json output.
 */

/** The digest rule of wire.ts (digestString). */
export const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

function shown(value: string): string {
  return value.length > 80 ? `${value.slice(0, 80)}…` : value;
}

export function digestArg(flag: string): (value: string) => string {
  return (value) => {
    if (!DIGEST_RE.test(value)) throw usageError(`${flag} "${shown(value)}" is not a digest: expected sha256:<64 lowercase hex>`, 'INVALID_DIGEST');
    return value;
  };
}

export function platformArg(value: string): string {
  try {
    parsePlatform(value);
  } catch (err) {
    throw usageError(`--platform: ${(err as Error).message}`, 'INVALID_PLATFORM');
  }
  return value;
}

/** Machine IDs are the control plane's to judge; locally only what can never be one is refused. */
function machineId(flag: string, value: string): string {
  if (value === '' || value.length > 128 || /[\s,/?#]/.test(value)) throw usageError(`${flag} "${shown(value)}" is not a machine ID`);
  return value;
}

export function machineArg(flag: string): (value: string) => string {
  return (value) => machineId(flag, value.trim());
}

/** Repeatable and comma-separated: --to a --to b,c → [a, b, c], without duplicates. */
export function machineListArg(flag: string): (value: string, previous: string[] | undefined) => string[] {
  return (value, previous) => {
    const out = [...(previous ?? [])];
    for (const part of value.split(',')) {
      const id = machineId(flag, part.trim());
      if (!out.includes(id)) out.push(id);
    }
    return out;
  };
}

export function positiveIntArg(flag: string): (value: string) => number {
  return (value) => {
    if (!/^[0-9]+$/.test(value) || Number(value) < 1 || Number(value) > 1_000_000) {
      throw usageError(`${flag} "${shown(value)}" is not a whole number from 1 to 1000000`);
    }
    return Number(value);
  };
}

export function enumArg(flag: string, allowed: readonly string[]): (value: string) => string {
  return (value) => {
    if (!allowed.includes(value)) throw usageError(`${flag} "${shown(value)}" is not one of ${allowed.join(', ')}`);
    return value;
  };
}
