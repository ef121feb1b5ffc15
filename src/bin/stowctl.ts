import { main } from '../cli/main.js';

// Ctrl-C and SIGTERM go through process.exit, so exit hooks (the temporary image store's removal) run.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => process.exit(signal === 'SIGINT' ? 130 : 143));
}

process.exitCode = await main(process.argv.slice(2));
