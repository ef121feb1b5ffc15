#!/usr/bin/env node
// Runs the built CLI when `npm run build` has produced it, else the TypeScript source through tsx.
// STOWAGE_FROM_SOURCE=1 always runs the source: the tests set it, so they never test a stale dist/.
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';

const built = fileURLToPath(new URL('../dist/stowd.js', import.meta.url));
if (existsSync(built) && process.env.STOWAGE_FROM_SOURCE !== '1') {
  await import(pathToFileURL(built).href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/bin/stowd.ts');
}
