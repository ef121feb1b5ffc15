import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import type { Plugin } from 'esbuild';
import { type Options, defineConfig } from 'tsup';

const common: Options = { format: ['esm'], target: 'node20', outDir: 'dist', sourcemap: true };

/**
 * stowctl is built in two parts so its most run commands load few files (src/cli/fast-path.ts):
 * dist/stowctl.js, the entry with the fast path, and dist/stowctl-main.js, the whole CLI (commander and
 * every command), which the entry imports only for the other commands. Built together, esbuild would
 * split the modules both use into many small shared chunks that every call then waits for in turn.
 */
const mainApart: Plugin = {
  name: 'stowctl-main-apart',
  setup(build) {
    build.onResolve({ filter: /^\.\.\/cli\/main\.js$/ }, () => ({ path: './stowctl-main.js', external: true }));
  },
};

/** `stowctl --help` prints this text (fast-path.ts): rendered by commander itself, at its width when not on a terminal. */
async function renderHelp(): Promise<void> {
  const script = "const { main } = await import('./dist/stowctl-main.js'); process.exitCode = await main(['--help']);";
  const help = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  writeFileSync('dist/stowctl-help.txt', help);
}

export default defineConfig((): Options[] => {
  // Both builds write into dist/ at the same time, so neither may clean it: it is emptied here, once.
  rmSync('dist', { recursive: true, force: true });
  return [
    { ...common, entry: { stowd: 'src/bin/stowd.ts', 'stowctl-main': 'src/cli/main.ts' }, onSuccess: renderHelp },
    { ...common, entry: { stowctl: 'src/bin/stowctl.ts' }, esbuildPlugins: [mainApart] },
  ];
});
