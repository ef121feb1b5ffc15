import { describe, expect, it } from 'vitest';
import { shellQuote, stowctl } from '../../src/web/app/commands.js';

/** The stowctl lines the dashboard shows must paste into a shell as the arguments the action used. */
describe('dashboard stowctl equivalents', () => {
  it('leaves plain arguments alone and quotes what a shell would expand or split', () => {
    expect(shellQuote('label:zone=a')).toBe('label:zone=a');
    expect(shellQuote('127.0.0.1:5000/team/tool:1')).toBe('127.0.0.1:5000/team/tool:1');
    expect(shellQuote('*')).toBe("'*'");
    expect(shellQuote('a b')).toBe("'a b'");
    expect(shellQuote("it's")).toBe(`'it'\\''s'`);
    expect(shellQuote('$(rm -rf ~)')).toBe("'$(rm -rf ~)'");
  });

  it('spells each action as stowctl takes it', () => {
    const digest = `sha256:${'a'.repeat(64)}`;
    expect(stowctl.distribute(digest, 'agent-1', ['agent-2', 'agent-3'])).toBe(`stowctl image distribute --digest ${digest} --from agent-1 --to agent-2,agent-3`);
    expect(stowctl.preload('reg:5000/app:1', '*')).toBe("stowctl catalog preload reg:5000/app:1 --agents '*'");
    expect(stowctl.operationCancel('op-01ABC')).toBe('stowctl image operation cancel op-01ABC');
  });
});
