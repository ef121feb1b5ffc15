import { StowageError } from '../../errors.js';

/**
 * Dockerfile parser (the subset of BuildKit's frontend/dockerfile/parser that the classic builder
 * needs): parser directives (`# escape=`), comments, line continuations, JSON and shell forms,
 * builder flags (`--from=…`). No heredocs. Variable expansion happens later, per instruction,
 * because its environment depends on the build state (see shell-lex.ts).
 */

export const INSTRUCTIONS = [
  'add', 'arg', 'cmd', 'copy', 'entrypoint', 'env', 'expose', 'from', 'healthcheck', 'label',
  'maintainer', 'onbuild', 'run', 'shell', 'stopsignal', 'user', 'volume', 'workdir',
] as const;
export type InstructionName = (typeof INSTRUCTIONS)[number];

export interface Flag {
  name: string;
  /** undefined for a bare `--flag`. */
  value: string | undefined;
}

export interface Instruction {
  cmd: InstructionName;
  /** The instruction as written, continuations joined (shown in "Step i/n : …"). */
  original: string;
  /** 1-based line where the instruction starts. */
  line: number;
  flags: Flag[];
  /** Everything after the instruction keyword and its flags, trimmed. */
  rest: string;
  /** Parsed arguments: words (unexpanded) or the JSON array. */
  args: string[];
  /** True when `args` came from a JSON array (exec form). */
  json: boolean;
  /** ENV / LABEL pairs, unexpanded (quotes still in place). */
  pairs?: Array<{ key: string; value: string }>;
  /** ONBUILD: the trigger instruction. */
  trigger?: Instruction;
}

export interface Dockerfile {
  escape: string;
  instructions: Instruction[];
}

export function parseError(line: number, message: string): StowageError {
  return new StowageError('BAD_REQUEST', `dockerfile parse error line ${line}: ${message}`);
}

const DIRECTIVE_RE = /^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$/;
const FLAG_TAKERS = new Set<InstructionName>(['from', 'copy', 'add', 'healthcheck', 'run']);

export function parseDockerfile(text: string): Dockerfile {
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  let escape = '\\';
  let i = 0;
  // Parser directives: only at the very top, before any comment, blank line or instruction.
  const seen = new Set<string>();
  for (; i < lines.length; i++) {
    const m = DIRECTIVE_RE.exec(lines[i]!);
    if (!m) break;
    const key = m[1]!.toLowerCase();
    if (seen.has(key)) throw parseError(i + 1, `only one ${key} parser directive can be used`);
    seen.add(key);
    if (key === 'escape') {
      if (m[2] !== '\\' && m[2] !== '`') throw parseError(i + 1, `invalid escape token '${m[2]}' does not match ` + '` or \\');
      escape = m[2];
    }
    // syntax= and unknown directives are ignored, like the classic builder.
  }
  const continuation = new RegExp(`${escape === '\\' ? '\\\\' : '`'}[ \\t]*$`);

  const instructions: Instruction[] = [];
  while (i < lines.length) {
    const raw = lines[i]!;
    const startLine = i + 1;
    i++;
    const trimmed = raw.trimStart();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    let logical = trimmed;
    let ended = !continuation.test(logical);
    if (!ended) logical = logical.replace(continuation, '');
    while (!ended && i < lines.length) {
      const next = lines[i]!;
      i++;
      const nt = next.trimStart();
      if (nt.startsWith('#')) continue; // comments inside a continuation are dropped
      if (nt === '') continue; // so are empty lines (Docker warns)
      if (continuation.test(next)) {
        logical += next.replace(continuation, '');
      } else {
        logical += next;
        ended = true;
      }
    }
    instructions.push(parseLine(logical.trim(), startLine, escape));
  }
  return { escape, instructions };
}

function parseLine(line: string, lineNo: number, escape: string, inOnbuild = false): Instruction {
  const m = /^(\S+)\s*([\s\S]*)$/.exec(line);
  if (!m) throw parseError(lineNo, 'empty instruction');
  const word = m[1]!;
  const cmd = word.toLowerCase() as InstructionName;
  if (!(INSTRUCTIONS as readonly string[]).includes(cmd)) throw parseError(lineNo, `unknown instruction: ${word.toUpperCase()}`);
  let rest = m[2]!.trim();
  const flags: Flag[] = [];
  if (FLAG_TAKERS.has(cmd)) {
    for (;;) {
      const fm = /^--([A-Za-z0-9][A-Za-z0-9-]*)(?:=(\S*))?(?:\s+|$)/.exec(rest);
      if (!fm) break;
      flags.push({ name: fm[1]!.toLowerCase(), value: fm[2] });
      rest = rest.slice(fm[0].length);
    }
  }
  const ins: Instruction = { cmd, original: line, line: lineNo, flags, rest, args: [], json: false };
  switch (cmd) {
    case 'env':
    case 'label':
      ins.pairs = parseNameVal(rest, cmd.toUpperCase(), lineNo, escape);
      break;
    case 'cmd':
    case 'entrypoint':
    case 'run':
    case 'shell': {
      const arr = tryJsonArray(rest);
      if (arr) {
        ins.args = arr;
        ins.json = true;
      } else {
        if (cmd === 'shell') throw parseError(lineNo, 'SHELL requires the arguments to be in JSON form');
        ins.args = rest === '' ? [] : [rest];
      }
      break;
    }
    case 'copy':
    case 'add':
    case 'volume': {
      const arr = tryJsonArray(rest);
      if (arr) {
        ins.args = arr;
        ins.json = true;
      } else {
        ins.args = splitWhitespace(rest);
      }
      break;
    }
    case 'healthcheck': {
      const hm = /^(\S+)\s*([\s\S]*)$/.exec(rest);
      if (!hm) throw parseError(lineNo, 'HEALTHCHECK requires an argument');
      ins.args = [hm[1]!];
      const tail = hm[2]!.trim();
      const arr = tryJsonArray(tail);
      if (arr) {
        ins.args.push(...arr);
        ins.json = true;
      } else if (tail !== '') {
        ins.args.push(tail);
      }
      break;
    }
    case 'onbuild': {
      if (inOnbuild) throw parseError(lineNo, 'Chaining ONBUILD via `ONBUILD ONBUILD` isn\'t allowed');
      if (rest === '') throw parseError(lineNo, 'ONBUILD requires at least one argument');
      const trigger = parseLine(rest, lineNo, escape, true);
      if (trigger.cmd === 'from' || trigger.cmd === 'maintainer' || trigger.cmd === 'onbuild') {
        throw parseError(lineNo, `${trigger.cmd.toUpperCase()} isn't allowed as an ONBUILD trigger`);
      }
      ins.trigger = trigger;
      ins.args = [rest];
      break;
    }
    case 'maintainer':
    case 'stopsignal':
    case 'user':
    case 'workdir':
      ins.args = rest === '' ? [] : [rest];
      break;
    default:
      // from, arg, expose: whitespace separated words (quotes kept for the expander).
      ins.args = parseWords(rest, escape);
  }
  return ins;
}

function tryJsonArray(rest: string): string[] | undefined {
  if (!rest.startsWith('[')) return undefined;
  try {
    const v: unknown = JSON.parse(rest);
    if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
  } catch {
    /* shell form */
  }
  return undefined;
}

function splitWhitespace(s: string): string[] {
  return s.split(/\s+/).filter((w) => w !== '');
}

/** BuildKit's parseWords: whitespace-separated, quotes and escapes kept in the words. */
export function parseWords(rest: string, escape: string): string[] {
  const words: string[] = [];
  const chars = [...rest];
  let phase: 'spaces' | 'word' | 'quote' = 'spaces';
  let word = '';
  let quote = '';
  let blankOK = false;
  for (let pos = 0; pos <= chars.length; pos++) {
    const atEnd = pos === chars.length;
    let ch = atEnd ? '' : chars[pos]!;
    if (phase === 'spaces') {
      if (atEnd) break;
      if (/\s/.test(ch)) continue;
      phase = 'word';
    }
    if (atEnd) {
      if (blankOK || word.length > 0) words.push(word);
      break;
    }
    if (phase === 'word') {
      if (/\s/.test(ch)) {
        phase = 'spaces';
        if (blankOK || word.length > 0) words.push(word);
        word = '';
        blankOK = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
        phase = 'quote';
      }
      if (ch === escape) {
        if (pos + 1 === chars.length) continue;
        word += ch;
        pos++;
        ch = chars[pos]!;
      }
      word += ch;
      continue;
    }
    // in quote
    if (ch === quote) phase = 'word';
    if (ch === escape && quote !== "'") {
      if (pos + 1 === chars.length) {
        phase = 'word';
        continue;
      }
      pos++;
      word += ch;
      ch = chars[pos]!;
    }
    word += ch;
  }
  return words;
}

function parseNameVal(rest: string, key: string, lineNo: number, escape: string): Array<{ key: string; value: string }> {
  const words = parseWords(rest, escape);
  if (words.length === 0) throw parseError(lineNo, `${key} requires at least one argument`);
  if (!words[0]!.includes('=')) {
    // Legacy form: KEY name value…
    const m = /^(\S+)\s+([\s\S]+)$/.exec(rest);
    if (!m) throw parseError(lineNo, `${key} must have two arguments`);
    return [{ key: m[1]!, value: m[2]! }];
  }
  return words.map((w) => {
    const eq = w.indexOf('=');
    if (eq < 0) throw parseError(lineNo, `Syntax error - can't find = in "${w}". Must be of the form: name=value`);
    if (eq === 0) throw parseError(lineNo, `${key} names can not be blank`);
    return { key: w.slice(0, eq), value: w.slice(eq + 1) };
  });
}

/** Splits a Dockerfile into build stages (instructions before the first FROM are the meta ARGs). */
export interface Stage {
  from: Instruction;
  /** The `AS name`, lower-cased, when given. */
  name: string | undefined;
  index: number;
  instructions: Instruction[];
}

export function splitStages(df: Dockerfile): { metaArgs: Instruction[]; stages: Stage[] } {
  const metaArgs: Instruction[] = [];
  const stages: Stage[] = [];
  for (const ins of df.instructions) {
    if (ins.cmd === 'from') {
      const args = ins.args;
      let name: string | undefined;
      if (args.length === 3 && args[1]!.toLowerCase() === 'as') {
        name = args[2]!.toLowerCase();
        if (!/^[a-z][a-z0-9-_.]*$/.test(name)) throw parseError(ins.line, `invalid name for build stage: "${args[2]}", name can't start with a number or contain symbols`);
        if (stages.some((s) => s.name === name)) throw parseError(ins.line, `duplicate name ${name}`);
      } else if (args.length !== 1) {
        throw parseError(ins.line, 'FROM requires either one or three arguments');
      }
      stages.push({ from: ins, name, index: stages.length, instructions: [] });
      continue;
    }
    const current = stages[stages.length - 1];
    if (!current) {
      if (ins.cmd !== 'arg') throw parseError(ins.line, 'no build stage in current context');
      metaArgs.push(ins);
      continue;
    }
    current.instructions.push(ins);
  }
  if (stages.length === 0) throw new StowageError('BAD_REQUEST', 'the Dockerfile (Dockerfile) cannot be empty');
  return { metaArgs, stages };
}
