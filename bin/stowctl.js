#!/usr/bin/env node
// Runs the built CLI (dist/, built by `npm ci` through `prepare`, or `npm run build`), else the
// TypeScript source through tsx. STOWAGE_FROM_SOURCE=1 forces the source (the tests set it, so an
// old build never hides a change: after editing src/, `npm run build` again).
//
// This file is CommonJS (bin/package.json) so that the commands run most, `stowctl --help` and
// `stowctl image status`, start without Node's ES module loader, which costs more than they do: they
// run from dist/stowctl-fast.cjs (src/bin/stowctl-fast.ts: src/cli/fast-path.ts as CommonJS). Every
// other command loads the full CLI, dist/stowctl.js.
const { existsSync } = require('node:fs');
const { join } = require('node:path');

const dist = join(__dirname, '..', 'dist');
const fromSource = process.env.STOWAGE_FROM_SOURCE === '1';
if (!fromSource && existsSync(join(dist, 'stowctl-fast.cjs'))) {
  const { exitOnSignals, fastPath } = require(join(dist, 'stowctl-fast.cjs'));
  exitOnSignals();
  fastPath(process.argv.slice(2)).then((code) => {
    if (code === undefined) return import('../dist/stowctl.js');
    process.exitCode = code;
  });
} else if (!fromSource && existsSync(join(dist, 'stowctl.js'))) {
  import('../dist/stowctl.js'); // a build from before the fast path
} else {
  import('tsx/esm/api').then(({ register }) => {
    register();
    return import('../src/bin/stowctl.ts');
  });
}
