/**
 * `-o yaml`: a JSON value as YAML 1.2 block style, the subset kubectl prints. Strings that YAML would
 * read as something else (numbers, booleans, null, "a: b", leading/trailing blanks)
 * are double-quoted with JSON escapes, which YAML reads back unchanged.
 */

/** Plain when it starts with a letter and holds no ": " or " #" (a colon inside, as in references, is fine). */
const PLAIN = /^[A-Za-z_/.][A-Za-z0-9_./+:@-]*$/;
const RESERVED = /^(true|false|null|yes|no|on|off|y|n|~)$/i;

function scalar(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  const s = String(v);
  return PLAIN.test(s) && !s.endsWith(':') && !RESERVED.test(s) ? s : JSON.stringify(s);
}

function isEmpty(v: unknown): boolean {
  return (Array.isArray(v) && v.length === 0) || (v !== null && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 0);
}

function lines(v: unknown, indent: string): string[] {
  if (Array.isArray(v)) {
    return v.flatMap((item) => {
      if (item !== null && typeof item === 'object' && !isEmpty(item)) {
        const [first, ...rest] = lines(item, `${indent}  `);
        return [`${indent}- ${first!.trimStart()}`, ...rest];
      }
      return [`${indent}- ${isEmpty(item) ? (Array.isArray(item) ? '[]' : '{}') : scalar(item)}`];
    });
  }
  if (v !== null && typeof v === 'object') {
    return Object.entries(v as Record<string, unknown>).flatMap(([k, item]) => {
      const key = `${indent}${scalar(k)}:`;
      if (isEmpty(item)) return [`${key} ${Array.isArray(item) ? '[]' : '{}'}`];
      if (item !== null && typeof item === 'object') return [key, ...lines(item, Array.isArray(item) ? indent : `${indent}  `)];
      return [`${key} ${scalar(item)}`];
    });
  }
  return [`${indent}${scalar(v)}`];
}

export function toYaml(value: unknown): string {
  if (isEmpty(value)) return Array.isArray(value) ? '[]' : '{}';
  return lines(value, '').join('\n');
}
