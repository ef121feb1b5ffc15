import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runOk } from '../harness/run.js';
import { tmpDir } from '../harness/tmp.js';
import { cleanEnv, runCli } from './helpers.js';

/** `stowctl completion bash|zsh`, sourced into a real bash and asked what it completes. */

async function complete(script: string, words: string[]): Promise<string[]> {
  const cword = words.length - 1;
  const out = await runOk('bash', [
    '-c',
    `source "$0"; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${cword}; _stowctl; printf '%s\\n' "\${COMPREPLY[@]}"`,
    script,
  ]);
  return out.split('\n').filter(Boolean).sort();
}

describe('stowctl completion', () => {
  it('completes commands, subcommands and flags in bash', async () => {
    const env = cleanEnv(await tmpDir('stowctl-completion-'));
    const r = await runCli(['completion', 'bash'], env);
    expect(r.code, r.stderr).toBe(0);
    const script = join(await tmpDir('stowctl-completion-'), 'stowctl.bash');
    await writeFile(script, r.stdout);

    expect(await complete(script, ['stowctl', ''])).toEqual(expect.arrayContaining(['catalog', 'completion', 'image', 'machine', 'operation', 'task']));
    expect(await complete(script, ['stowctl', 'image', 'di'])).toEqual(['distribute']);
    expect(await complete(script, ['stowctl', 'catalog', 'registry', ''])).toEqual(['add', 'list', 'ls', 'rm']);
    // Flags of the command in place, after a flag that takes a value.
    expect(await complete(script, ['stowctl', '--host', 'http://x', 'image', 'distribute', '--f'])).toEqual(['--format', '--from']);

    const zsh = await runCli(['completion', 'zsh'], env);
    expect(zsh.stdout.startsWith('#compdef stowctl')).toBe(true);
    expect(zsh.stdout).toContain('bashcompinit');
    const bad = await runCli(['completion', 'fish'], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('"fish" is not bash or zsh');
  });
});
