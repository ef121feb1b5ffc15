import react from '@vitejs/plugin-react';
import { join } from 'node:path';
import { defineConfig } from 'vite';

/**
 * The dashboard: built into dist/web (served by the control plane at /ui/). `npm run build` runs this;
 * tests build into a temp dir with `--outDir`.
 */
export default defineConfig({
  root: join(import.meta.dirname, 'app'),
  base: '/ui/',
  plugins: [react()],
  logLevel: 'warn',
  build: {
    outDir: join(import.meta.dirname, '..', '..', 'dist', 'web'),
    emptyOutDir: true,
    // The control plane serves these with a strict CSP: no inline scripts, one origin.
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 1024,
  },
});
