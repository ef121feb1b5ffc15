import { usageError } from './errors.js';

/**
 * `--format` templates the way docker reads them, for the part scripts use: text with `{{…}}` actions,
 * each a pipeline of `.Field.Sub` lookups and functions (`json`, `join`, `upper`, `lower`, `len`,
 * `truncate`): `{{.Digest}}`, `{{json .}}`, `{{join .References ","}}`, `{{.Presence.State | upper}}`.
 * Field names match the JSON keys exactly or ignoring case and underscores (`.MachineID` is
 * `machine_id`). `\t` and `\n` in the template are a tab and a newline, as docker has them; a template
 * starting with `table ` prints a header row and aligns the columns. An unknown field or function is
 * a usage error naming what exists.
 */

type Value = unknown;

interface Call {
  fn: string;
  args: Array<{ kind: 'field'; path: string[] } | { kind: 'string'; value: string } | { kind: 'number'; value: number }>;
}

type Part = { kind: 'text'; text: string } | { kind: 'action'; source: string; pipeline: Call[] };

export interface Template {
  /** Whether the template asked for a header row and aligned columns (`table …`). */
  table: boolean;
  /** The header row of a `table` template: each action's last field name, upper-cased. */
  headers: string[];
  render(value: Value): string;
}

const FUNCTIONS = ['json', 'join', 'upper', 'lower', 'len', 'truncate', 'println'] as const;

function unescape(s: string): string {
  return s.replace(/\\t/g, '\t').replace(/\\n/g, '\n');
}

function tokenize(source: string): string[] {
  const tokens: string[] = [];
  const re = /\s*("(?:[^"\\]|\\.)*"|\||[^\s|"]+)/gy;
  let m: RegExpExecArray | null;
  let last = 0;
  while ((m = re.exec(source)) !== null) {
    tokens.push(m[1]!);
    last = re.lastIndex;
  }
  if (source.slice(last).trim() !== '') throw usageError(`--format: cannot read "{{${source}}}"`);
  return tokens;
}

function parseArg(token: string): Call['args'][number] {
  if (token === '.') return { kind: 'field', path: [] };
  if (token.startsWith('.')) return { kind: 'field', path: token.slice(1).split('.') };
  if (token.startsWith('"')) return { kind: 'string', value: JSON.parse(token) as string };
  if (/^-?\d+$/.test(token)) return { kind: 'number', value: Number(token) };
  throw usageError(`--format: "${token}" is neither a field (.Name) nor a function (${FUNCTIONS.join(', ')})`);
}

function parseAction(source: string): Call[] {
  const tokens = tokenize(source);
  const stages: string[][] = [[]];
  for (const t of tokens) {
    if (t === '|') stages.push([]);
    else stages[stages.length - 1]!.push(t);
  }
  return stages.map((words) => {
    if (words.length === 0) throw usageError(`--format: empty pipeline stage in "{{${source}}}"`);
    const [head, ...rest] = words as [string, ...string[]];
    if ((FUNCTIONS as readonly string[]).includes(head)) return { fn: head, args: rest.map(parseArg) };
    if (rest.length > 0) throw usageError(`--format: unknown function "${head}" (known: ${FUNCTIONS.join(', ')})`);
    return { fn: '', args: [parseArg(head)] };
  });
}

export function parseTemplate(input: string): Template {
  let text = unescape(input);
  const table = /^table\s/.test(text);
  if (table) text = text.replace(/^table\s+/, '');
  const parts: Part[] = [];
  let at = 0;
  while (at < text.length) {
    const open = text.indexOf('{{', at);
    if (open === -1) {
      parts.push({ kind: 'text', text: text.slice(at) });
      break;
    }
    const close = text.indexOf('}}', open + 2);
    if (close === -1) throw usageError('--format: "{{" without "}}"');
    if (open > at) parts.push({ kind: 'text', text: text.slice(at, open) });
    const source = text.slice(open + 2, close).trim();
    parts.push({ kind: 'action', source, pipeline: parseAction(source) });
    at = close + 2;
  }
  const headers = parts
    .filter((p): p is Extract<Part, { kind: 'action' }> => p.kind === 'action')
    .map((p) => {
      const fields = p.pipeline.flatMap((c) => c.args).filter((a) => a.kind === 'field');
      const last = fields[fields.length - 1];
      return last && last.kind === 'field' && last.path.length ? headerOf(last.path[last.path.length - 1]!) : p.source.toUpperCase();
    });
  return {
    table,
    headers,
    render: (value) => parts.map((p) => (p.kind === 'text' ? p.text : show(evaluate(p.pipeline, value)))).join(''),
  };
}

/** "machine_id" / "MachineID" → "MACHINE ID", as docker's headers read. */
function headerOf(name: string): string {
  return name
    .replace(/_/g, ' ')
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .toUpperCase();
}

const squash = (s: string): string => s.replace(/_/g, '').toLowerCase();

function lookup(value: Value, path: string[]): Value {
  let v = value;
  for (const name of path) {
    if (v === null || v === undefined) return undefined;
    if (typeof v !== 'object' || Array.isArray(v)) throw usageError(`--format: .${path.join('.')}: "${name}" is not a field of a ${Array.isArray(v) ? 'list' : typeof v}`);
    const obj = v as Record<string, unknown>;
    if (name in obj) {
      v = obj[name];
      continue;
    }
    const key = Object.keys(obj).find((k) => squash(k) === squash(name));
    if (key === undefined) throw usageError(`--format: no field "${name}" (fields: ${Object.keys(obj).join(', ')})`);
    v = obj[key];
  }
  return v;
}

function evaluate(pipeline: Call[], dot: Value): Value {
  let piped: Value;
  let first = true;
  for (const call of pipeline) {
    const args = call.args.map((a) => (a.kind === 'field' ? lookup(dot, a.path) : a.value));
    if (!first) args.push(piped);
    first = false;
    piped = apply(call.fn, args);
  }
  return piped;
}

function apply(fn: string, args: Value[]): Value {
  const [a, b] = args;
  switch (fn) {
    case '':
      return a;
    case 'json':
      return JSON.stringify(a ?? null);
    case 'join':
      // join LIST SEP, or LIST | join SEP (the piped list comes last).
      if (Array.isArray(a)) return a.map(show).join(String(b ?? ''));
      if (Array.isArray(b)) return b.map(show).join(String(a ?? ''));
      throw usageError('--format: join takes a list and a separator');
    case 'upper':
      return show(a).toUpperCase();
    case 'lower':
      return show(a).toLowerCase();
    case 'len':
      return Array.isArray(a) ? a.length : typeof a === 'string' ? a.length : a && typeof a === 'object' ? Object.keys(a).length : 0;
    case 'truncate': {
      // truncate TEXT N, or TEXT | truncate N.
      const [text, n] = typeof a === 'number' ? [b, a] : [a, b];
      return [...show(text)].slice(0, Number(n)).join('');
    }
    case 'println':
      return `${args.map(show).join(' ')}\n`;
    default:
      throw usageError(`--format: unknown function "${fn}"`);
  }
}

/** Go's default printing, close enough: lists as [a b], objects as JSON, nothing as "". */
function show(v: Value): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) return `[${v.map(show).join(' ')}]`;
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}
