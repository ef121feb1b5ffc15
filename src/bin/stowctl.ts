import { fastPath } from '../cli/fast-path.js';
import { processIo } from '../cli/io.js';

// Ctrl-C and SIGTERM go through process.exit, so exit hooks (the temporary image store's removal) run.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => process.exit(signal === 'SIGINT' ? 130 : 143));
}

// The commands run most answer without commander (fast-path.ts); everything else loads the full CLI.
const argv = process.argv.slice(2);
const io = processIo();
process.exitCode = (await fastPath(argv, io)) ?? (await (await import('../cli/main.js')).main(argv, io));
