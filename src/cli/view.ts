import { usageError } from './errors.js';
import { formatTable, toJson } from './output.js';
import { parseTemplate } from './template.js';
import { toYaml } from './yaml.js';

/**
 * How a command's answer is printed, chosen by the global flags as docker and kubectl habits go:
 *   (default)      a table (long digests and lists shortened)
 *   -o wide        the table with more columns;  --no-trunc  nothing shortened
 *   -o json/--json the whole response object;  -o yaml  the same as YAML
 *   --format T     T applied to each row (or to the whole object), Go-template-like (template.ts)
 */

export type OutputMode = 'table' | 'wide' | 'json' | 'yaml';
export const OUTPUT_MODES: readonly OutputMode[] = ['table', 'wide', 'json', 'yaml'];

export interface ViewOptions {
  mode: OutputMode;
  noTrunc: boolean;
  format: string | undefined;
}

/** Whether output is for programs (no progress bars, errors as objects). */
export function isMachineOutput(o: ViewOptions): boolean {
  return o.mode === 'json' || o.mode === 'yaml' || o.format !== undefined;
}

export function viewOptions(flags: { json?: boolean | undefined; output?: string | undefined; noTrunc?: boolean | undefined; trunc?: boolean | undefined; format?: string | undefined }): ViewOptions {
  const output = flags.output ?? (flags.json ? 'json' : 'table');
  if (!(OUTPUT_MODES as readonly string[]).includes(output)) throw usageError(`-o "${output}" is not one of ${OUTPUT_MODES.join(', ')}`);
  if (flags.json && output !== 'json') throw usageError(`--json and -o ${output} disagree; pick one`);
  if (flags.format !== undefined && (output === 'json' || output === 'yaml')) throw usageError(`--format and -o ${output} disagree; pick one`);
  // commander stores --no-trunc as trunc=false.
  return { mode: output as OutputMode, noTrunc: flags.noTrunc === true || flags.trunc === false, format: flags.format };
}

/** Reads the output flags straight from argv, for errors raised before commander has parsed them. */
export function viewOptionsFromArgv(argv: readonly string[]): ViewOptions {
  let output: string | undefined;
  let format: string | undefined;
  argv.forEach((a, i) => {
    if ((a === '-o' || a === '--output') && i + 1 < argv.length) output = argv[i + 1];
    else if (a.startsWith('--output=')) output = a.slice('--output='.length);
    else if (a.startsWith('-o') && a.length > 2) output = a.slice(2);
    else if (a === '--format' && i + 1 < argv.length) format = argv[i + 1];
  });
  const json = argv.includes('--json');
  const mode = (OUTPUT_MODES as readonly string[]).includes(output ?? '') ? (output as OutputMode) : json ? 'json' : 'table';
  return { mode, noTrunc: argv.includes('--no-trunc'), format };
}

/** A column of a table: its header, how a row shows in it, and whether only `-o wide` shows it. */
export interface Column<T> {
  header: string;
  cell: (row: T, o: { noTrunc: boolean }) => string;
  wide?: boolean;
}

/** A list answer: the whole response (json/yaml), its rows (tables, --format) and how they look. */
export interface ListView<T> {
  rows: readonly T[];
  columns: ReadonlyArray<Column<T>>;
  /** Printed instead of an empty table. */
  empty: string;
}

/** The text for a list answer in the chosen mode. */
export function renderList<T>(whole: unknown, view: ListView<T>, o: ViewOptions): string {
  if (o.mode === 'json') return toJson(whole);
  if (o.mode === 'yaml') return toYaml(whole);
  if (o.format !== undefined) return renderTemplate(view.rows, o.format);
  if (view.rows.length === 0) return view.empty;
  const cols = view.columns.filter((c) => o.mode === 'wide' || !c.wide);
  return formatTable(
    cols.map((c) => c.header),
    view.rows.map((r) => cols.map((c) => c.cell(r, o))),
  );
}

/** The text for a single-object answer (inspect, operation get): --format applies to the object itself. */
export function renderObject(whole: unknown, human: () => string, o: ViewOptions): string {
  if (o.mode === 'json') return toJson(whole);
  if (o.mode === 'yaml') return toYaml(whole);
  if (o.format !== undefined) return renderTemplate([whole], o.format);
  return human();
}

function renderTemplate(rows: readonly unknown[], format: string): string {
  const t = parseTemplate(format === 'json' ? '{{json .}}' : format);
  const out = rows.map((r) => t.render(r));
  if (!t.table) return out.join('\n');
  return formatTable(
    t.headers,
    out.map((line) => line.split('\t')),
  );
}
