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
