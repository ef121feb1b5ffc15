import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Options, defineConfig } from 'tsup';

/** dist/, or another directory for a test that checks the built CLI without touching the checkout's build. */
const outDir = process.env['STOWAGE_BUILD_OUT'] ?? 'dist';
const common: Options = { target: 'node20', outDir, sourcemap: true };

/** `stowctl --help` prints this text (fast-path.ts): rendered by commander itself, at its width when not on a terminal. */
async function renderHelp(): Promise<void> {
  const help = execFileSync(process.execPath, [join(outDir, 'stowctl.js'), '--help'], { encoding: 'utf8' });
  writeFileSync(join(outDir, 'stowctl-help.txt'), help);
}

export default defineConfig((): Options[] => {
  // Both builds write into dist/ at the same time, so neither may clean it: it is emptied here, once.
  rmSync(outDir, { recursive: true, force: true });
  return [
    { ...common, format: ['esm'], entry: ['src/bin/stowd.ts', 'src/bin/stowctl.ts'], onSuccess: renderHelp },
    // The fast path as one CommonJS file, which bin/stowctl.js requires before anything else: the ES module
    // loader and its file-by-file loading are what a short command would spend most on. Its imports of Node
    // modules become require() (no dynamic import() left to start that loader); what it imports lazily
    // (zod, for a config file or an ambiguous name) stays lazy.
    {
      ...common,
      format: ['cjs'],
      entry: { 'stowctl-fast': 'src/bin/stowctl-fast.ts' },
      shims: true,
      esbuildOptions(options) {
        options.supported = { ...options.supported, 'dynamic-import': false };
      },
    },
  ];
});
