#!/usr/bin/env node
// Runs the built daemon (dist/, built by `npm ci` through `prepare`, or `npm run build`), else the
// TypeScript source through tsx. STOWAGE_FROM_SOURCE=1 forces the source (the tests set it, so an
// old build never hides a change). CommonJS, as everything in bin/ (bin/package.json, see bin/stowctl.js).
const { existsSync } = require('node:fs');
const { join } = require('node:path');

if (process.env.STOWAGE_FROM_SOURCE !== '1' && existsSync(join(__dirname, '..', 'dist', 'stowd.js'))) {
  import('../dist/stowd.js');
} else {
  import('tsx/esm/api').then(({ register }) => {
    register();
    return import('../src/bin/stowd.ts');
  });
}
