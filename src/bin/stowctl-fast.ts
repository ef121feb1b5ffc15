/**
 * dist/stowctl-fast.cjs, which bin/stowctl.js requires first: the fast path (src/cli/fast-path.ts) as one
 * CommonJS file, so `stowctl --help` and `stowctl image status` start without Node's ES module loader.
 */
export { fastPath } from '../cli/fast-path.js';
export { exitOnSignals } from '../cli/io.js';
