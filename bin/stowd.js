#!/usr/bin/env node
// Runs the built daemon (dist/, built by `npm ci` through `prepare`, or `npm run build`), else the
// TypeScript source through tsx. STOWAGE_FROM_SOURCE=1 forces the source (the tests set it, so an
// old build never hides a change).
import { existsSync } from 'node:fs';

const built = new URL('../dist/stowd.js', import.meta.url);
if (process.env.STOWAGE_FROM_SOURCE !== '1' && existsSync(built)) {
  await import(built.href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/bin/stowd.ts');
}
