import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/bin/stowd.ts', 'src/bin/stowctl.ts'],
  format: ['esm'],
  target: 'node20',
  outDir: 'dist',
  clean: true,
  sourcemap: true,
});
