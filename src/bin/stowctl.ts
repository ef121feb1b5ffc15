import { fastPath } from '../cli/fast-path.js';
import { exitOnSignals, processIo } from '../cli/io.js';

exitOnSignals();
// The commands run most answer without commander (fast-path.ts); everything else loads the full CLI.
const argv = process.argv.slice(2);
const io = processIo();
process.exitCode = (await fastPath(argv, io)) ?? (await (await import('../cli/main.js')).main(argv, io));
