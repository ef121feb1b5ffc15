import { describe, expect, it } from 'vitest';
import { parseDockerfile, splitStages } from '../../src/engine/build/dockerfile.js';
import { parseChown, parseDuration, parsePorts } from '../../src/engine/build/instructions.js';
import { matchSegment } from '../../src/engine/build/paths.js';
import { pathMatch } from '../../src/engine/params.js';
import { expandWord, expandWords } from '../../src/engine/build/shell-lex.js';
import { humanSize, progressBar } from '../../src/engine/jsonprogress.js';
import { decodeRegistryAuth, isInsecureRegistry } from '../../src/engine/registry-auth.js';
import type { EngineContext } from '../../src/engine/context.js';

const env = new Map([
  ['A', 'alpha'],
  ['EMPTY', ''],
  ['SP', 'a b'],
]);

describe('variable expansion', () => {
  it('expands the forms Docker supports', () => {
    expect(expandWord('$A-${A}', env)).toBe('alpha-alpha');
    expect(expandWord('${NOPE:-def}/${EMPTY:-d2}/${EMPTY-d3}', env)).toBe('def/d2/');
    expect(expandWord('${A:+set}|${NOPE:+set}|${EMPTY+x}', env)).toBe('set||x');
    expect(expandWord("'$A' \"$A\" \\$A", env)).toBe('$A alpha $A');
    expect(expandWord('$', env)).toBe('$');
    expect(() => expandWord('${NOPE:?must be set}', env)).toThrow(/NOPE: must be set/);
    expect(() => expandWord('${A', env)).toThrow();
  });
  it('splits words on unquoted whitespace, including from variables', () => {
    expect(expandWords('$SP "$SP" c', env)).toEqual(['a', 'b', 'a b', 'c']);
  });
  it('honours a backtick escape', () => {
    expect(expandWord('`$A', env, '`')).toBe('$A');
  });
});

describe('Dockerfile parser', () => {
  it('joins continuations, drops comments, reads JSON and shell forms', () => {
    const df = parseDockerfile(
      [
        '# a comment',
        'FROM alpine AS Build',
        'ENV A=1 \\',
        '  # comment inside',
        '  B="two words"',
        'CMD ["sh", "-c", "echo"]',
        'ENTRYPOINT echo hi',
        'COPY --from=build --chown=1:1 a b /dst/',
        'HEALTHCHECK --interval=5s CMD ["true"]',
        'onbuild copy . /app',
      ].join('\n'),
    );
    const [from, envIns, cmd, ep, copy, hc, onbuild] = df.instructions;
    expect(from!.args).toEqual(['alpine', 'AS', 'Build']);
    expect(envIns!.pairs).toEqual([
      { key: 'A', value: '1' },
      { key: 'B', value: '"two words"' },
    ]);
    expect(cmd!.json).toBe(true);
    expect(cmd!.args).toEqual(['sh', '-c', 'echo']);
    expect(ep!.json).toBe(false);
    expect(ep!.args).toEqual(['echo hi']);
    expect(copy!.flags).toEqual([
      { name: 'from', value: 'build' },
      { name: 'chown', value: '1:1' },
    ]);
    expect(copy!.args).toEqual(['a', 'b', '/dst/']);
    expect(hc!.args).toEqual(['CMD', 'true']);
    expect(onbuild!.trigger!.cmd).toBe('copy');
    expect(splitStages(df).stages[0]!.name).toBe('build');
  });
  it('supports the escape directive', () => {
    const df = parseDockerfile('# escape=`\nFROM scratch\nCOPY a `\n  b /x/\n');
    expect(df.escape).toBe('`');
    expect(df.instructions[1]!.args).toEqual(['a', 'b', '/x/']);
  });
  it('rejects unknown instructions with the line number', () => {
    expect(() => parseDockerfile('FROM scratch\nFOO bar\n')).toThrow('dockerfile parse error line 2: unknown instruction: FOO');
  });
  it('keeps the legacy ENV form', () => {
    expect(parseDockerfile('ENV A hello world').instructions[0]!.pairs).toEqual([{ key: 'A', value: 'hello world' }]);
  });
});

describe('instruction helpers', () => {
  it('parses ports, durations, chown', () => {
    expect(parsePorts(['80', '53/udp', '8000-8001'])).toEqual(['80/tcp', '53/udp', '8000/tcp', '8001/tcp']);
    expect(() => parsePorts(['x'])).toThrow('Invalid containerPort: x');
    expect(parseDuration('1m30s')).toBe(90e9);
    const passwd = Buffer.from('root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n');
    const group = Buffer.from('root:x:0:\nstaff:x:50:\n');
    expect(parseChown('app', passwd, group)).toEqual({ uid: 1000, gid: 1001 });
    expect(parseChown('app:staff', passwd, group)).toEqual({ uid: 1000, gid: 50 });
    expect(parseChown('5', passwd, group)).toEqual({ uid: 5, gid: 5 });
    expect(() => parseChown('nobody', passwd, group)).toThrow(/no such user: nobody/);
    expect(matchSegment('*.txt', 'a.txt')).toBe(true);
    expect(matchSegment('[ab]?', 'bz')).toBe(true);
    expect(matchSegment('*.txt', 'a.md')).toBe(false);
    expect(matchSegment('[^a]*', 'b.txt')).toBe(true);
    expect(matchSegment('[^a]*', 'a.txt')).toBe(false);
    expect(matchSegment('\\*x', '*x')).toBe(true);
    expect(matchSegment('\\*x', 'ax')).toBe(false);
    // Malformed, as Go's ErrBadPattern: the build fails, while the image-list filter just matches nothing.
    expect(() => matchSegment('[ab', 'a')).toThrow(/syntax error in pattern/);
    expect(() => matchSegment('a\\', 'a')).toThrow(/syntax error in pattern/);
    expect(pathMatch('[ab', 'a')).toBe(false);
    expect(pathMatch('team/*', 'team/app')).toBe(true);
    expect(pathMatch('team/*', 'team/app/x')).toBe(false);
  });
});

describe('progress and auth helpers', () => {
  it('renders sizes and bars like dockerd', () => {
    expect(humanSize(528)).toBe('528B');
    expect(humanSize(1234567)).toBe('1.235MB');
    expect(progressBar(50, 100)).toBe(`[${'='.repeat(25)}>${' '.repeat(25)}]      50B/100B`);
  });
  it('decodes X-Registry-Auth in its padding variants', () => {
    const json = JSON.stringify({ username: 'u', password: 'p?>', serveraddress: 'h:5000' });
    const std = Buffer.from(json).toString('base64');
    const url = Buffer.from(json).toString('base64url');
    for (const v of [std, url, url.replace(/=+$/, ''), `${url}==`.replace(/=+$/, '=')]) {
      expect(decodeRegistryAuth(v)).toMatchObject({ username: 'u', password: 'p?>', serveraddress: 'h:5000' });
    }
    expect(decodeRegistryAuth('')).toBeUndefined();
    expect(decodeRegistryAuth(Buffer.from('{}').toString('base64'))).toMatchObject({ username: undefined });
    expect(() => decodeRegistryAuth('!!!')).toThrow(/invalid X-Registry-Auth/);
  });
  it('treats loopback and configured registries as insecure', () => {
    const ctx = { registries: { insecureRegistries: ['reg.lan:5000'], credentials: {}, searchRegistries: [] } } as unknown as EngineContext;
    expect(isInsecureRegistry(ctx, '127.0.0.1:5000')).toBe(true);
    expect(isInsecureRegistry(ctx, 'localhost')).toBe(true);
    expect(isInsecureRegistry(ctx, 'reg.lan:5000')).toBe(true);
    expect(isInsecureRegistry(ctx, 'example.com')).toBe(false);
  });
});
