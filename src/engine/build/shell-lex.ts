import { StowageError } from '../../errors.js';

/**
 * Dockerfile word expansion, following BuildKit's shell lexer (frontend/dockerfile/shell/lex.go):
 * quotes ('…' literal, "…" with expansion), the escape token, $VAR, ${VAR}, ${VAR:-w}, ${VAR-w},
 * ${VAR:+w}, ${VAR+w}, ${VAR:?msg}, ${VAR?msg}. No command substitution, no globbing.
 */
export type Env = ReadonlyMap<string, string>;

class Scanner {
  private pos = 0;
  constructor(private readonly chars: string[]) {}
  peek(): string | undefined {
    return this.chars[this.pos];
  }
  next(): string | undefined {
    return this.chars[this.pos++];
  }
  eof(): boolean {
    return this.pos >= this.chars.length;
  }
}

/** Accumulates words: unquoted whitespace (including whitespace from unquoted variables) splits. */
class Words {
  readonly list: string[] = [];
  private word = '';
  private inWord = false;
  addChar(ch: string): void {
    if (/\s/.test(ch)) {
      if (this.inWord) this.flush();
      return;
    }
    this.addRawChar(ch);
  }
  addRawChar(ch: string): void {
    this.word += ch;
    this.inWord = true;
  }
  addString(s: string): void {
    for (const ch of s) this.addChar(ch);
  }
  addRawString(s: string): void {
    this.word += s;
    this.inWord = true;
  }
  /** Marks that a (possibly empty) quoted word was seen: "" is still a word. */
  markWord(): void {
    this.inWord = true;
  }
  flush(): void {
    if (this.inWord) this.list.push(this.word);
    this.word = '';
    this.inWord = false;
  }
}

function lexError(message: string): StowageError {
  return new StowageError('BAD_REQUEST', message);
}

class ShellWord {
  private readonly sc: Scanner;
  constructor(
    input: string,
    private readonly env: Env,
    private readonly escape: string,
  ) {
    this.sc = new Scanner([...input]);
  }

  /** Processes until `stop` (not consumed… consumed, like BuildKit) or end; returns the word and the split words. */
  process(stop: string | undefined): { word: string; words: string[] } {
    let result = '';
    const words = new Words();
    while (!this.sc.eof()) {
      const ch = this.sc.peek()!;
      if (stop !== undefined && ch === stop) {
        this.sc.next();
        words.flush();
        return { word: result, words: words.list };
      }
      if (ch === "'") {
        const s = this.singleQuote();
        result += s;
        words.addRawString(s);
        words.markWord();
      } else if (ch === '"') {
        const s = this.doubleQuote();
        result += s;
        words.addRawString(s);
        words.markWord();
      } else if (ch === '$') {
        const s = this.dollar();
        result += s;
        words.addString(s);
      } else {
        this.sc.next();
        if (ch === this.escape) {
          if (this.sc.eof()) continue; // an escape at the end is dropped
          const esc = this.sc.next()!;
          result += esc;
          words.addRawChar(esc);
          continue;
        }
        result += ch;
        words.addChar(ch);
      }
    }
    if (stop !== undefined) throw lexError(`unexpected end of statement while looking for matching ${stop}`);
    words.flush();
    return { word: result, words: words.list };
  }

  private singleQuote(): string {
    this.sc.next(); // '
    let out = '';
    for (;;) {
      const ch = this.sc.next();
      if (ch === undefined) throw lexError('unexpected end of statement while looking for matching single-quote');
      if (ch === "'") return out;
      out += ch;
    }
  }

  private doubleQuote(): string {
    this.sc.next(); // "
    let out = '';
    for (;;) {
      const ch = this.sc.peek();
      if (ch === undefined) throw lexError('unexpected end of statement while looking for matching double-quote');
      if (ch === '"') {
        this.sc.next();
        return out;
      }
      if (ch === '$') {
        out += this.dollar();
        continue;
      }
      this.sc.next();
      if (ch === this.escape) {
        const nx = this.sc.peek();
        if (nx === undefined) continue;
        if (nx === '"' || nx === '$' || nx === this.escape) {
          out += this.sc.next();
          continue;
        }
      }
      out += ch;
    }
  }

  private name(): string {
    let name = '';
    while (!this.sc.eof()) {
      const ch = this.sc.peek()!;
      if (name.length === 0 && /[0-9]/.test(ch)) {
        while (!this.sc.eof() && /[0-9]/.test(this.sc.peek()!)) name += this.sc.next();
        return name;
      }
      if (name.length === 0 && /[$@*#?!-]/.test(ch)) return this.sc.next()!;
      if (!/[\p{L}\p{N}_]/u.test(ch)) break;
      name += this.sc.next();
    }
    return name;
  }

  private dollar(): string {
    this.sc.next(); // $
    if (this.sc.peek() !== '{') {
      const name = this.name();
      if (name === '') return '$';
      return this.env.get(name) ?? '';
    }
    this.sc.next(); // {
    const name = this.name();
    const ch = this.sc.next();
    if (ch === undefined) throw lexError('syntax error: missing }');
    if (name === '') throw lexError(`invalid variable name in substitution`);
    const value = this.env.get(name);
    if (ch === '}') return value ?? '';
    let colon = false;
    let mod = ch;
    if (ch === ':') {
      colon = true;
      const m = this.sc.next();
      if (m === undefined) throw lexError('syntax error: missing }');
      mod = m;
    }
    if (mod !== '-' && mod !== '+' && mod !== '?') throw lexError(`unsupported modifier (${mod}) in substitution`);
    const { word } = this.process('}');
    const set = value !== undefined && (!colon || value !== '');
    switch (mod) {
      case '-':
        return set ? value! : word;
      case '+':
        return set ? word : '';
      default:
        if (!set) throw lexError(`${name}: ${word === '' ? 'is not allowed to be unset' : word}`);
        return value!;
    }
  }
}

/** Expands one word, removing quotes and escapes (BuildKit's ProcessWord). */
export function expandWord(input: string, env: Env, escape = '\\'): string {
  return new ShellWord(input, env, escape).process(undefined).word;
}

/** Expands and splits into words on unquoted whitespace (BuildKit's ProcessWords). */
export function expandWords(input: string, env: Env, escape = '\\'): string[] {
  return new ShellWord(input, env, escape).process(undefined).words;
}
