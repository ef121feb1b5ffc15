/**
 * Everything stowctl touches outside itself, injectable so tests drive main() with their own streams
 * and environment. Human output goes to stdout, diagnostics and progress to stderr.
 */
export interface OutStream {
  write(chunk: string): boolean;
  isTTY?: boolean | undefined;
  columns?: number | undefined;
}

export interface CliIo {
  stdout: OutStream;
  stderr: OutStream;
  env: NodeJS.ProcessEnv;
}

export function processIo(): CliIo {
  return { stdout: process.stdout, stderr: process.stderr, env: process.env };
}

/** Writes one line (a newline added). */
export function writeLine(stream: OutStream, line = ''): void {
  stream.write(`${line}\n`);
}

const SIGNALS_SET = Symbol.for('stowctl.exitOnSignals');

/**
 * Ctrl-C and SIGTERM go through process.exit (130, 143), so exit hooks (the temporary image store's
 * removal) run. Once per process: the built fast path and, when it hands over, the full CLI both ask.
 */
export function exitOnSignals(): void {
  const p = process as NodeJS.Process & { [SIGNALS_SET]?: true };
  if (p[SIGNALS_SET]) return;
  p[SIGNALS_SET] = true;
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => process.exit(signal === 'SIGINT' ? 130 : 143));
  }
}
