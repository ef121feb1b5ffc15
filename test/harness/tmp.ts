import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

/**
 * Temporary directories that are removed after the test file's tests (afterAll) and, as a fallback,
 * when the process exits. Usage: `const dir = await tmpDir('pull-')`.
 */

const live = new Set<string>();

/**
 * Creates a fresh directory under the OS temp dir (or under `parent`, e.g. a tmpfs); it is deleted when the
 * test file finishes.
 */
export async function tmpDir(prefix = 'stowage-test-', parent: string = tmpdir()): Promise<string> {
  const dir = await mkdtemp(join(parent, prefix));
  live.add(dir);
  return dir;
}

/** Removes every directory tmpDir handed out so far (called automatically after the file's tests). */
export async function cleanupTmpDirs(): Promise<void> {
  const dirs = [...live];
  live.clear();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
}

// Each test file imports its own copy of this module, so this registers one afterAll per file.
try {
  afterAll(cleanupTmpDirs);
} catch {
  /* imported outside a vitest collection phase: the exit hook below still cleans up */
}

process.once('exit', () => {
  for (const d of live) rmSync(d, { recursive: true, force: true });
});
