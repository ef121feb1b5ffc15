import { describe, expect, it } from 'vitest';
import { isStowageError } from '../../src/errors.js';
import {
  familiarName,
  familiarString,
  formatReference,
  isImageIdLike,
  normalizeReference,
  parseReference,
  parseRepositoryName,
  repository,
  withDefaultTag,
} from '../../src/oci/reference.js';

const D = `sha256:${'a'.repeat(64)}` as const;
const HEX64 = 'b'.repeat(64);

function expectInvalid(input: string, message?: RegExp): void {
  let caught: unknown;
  try {
    parseReference(input);
  } catch (err) {
    caught = err;
  }
  expect(isStowageError(caught, 'INVALID_REFERENCE'), `expected "${input}" to be rejected`).toBe(true);
  expect((caught as Error).message).toMatch(/^invalid reference format/);
  if (message) expect((caught as Error).message).toMatch(message);
}

describe('parseReference normalisation', () => {
  // input, domain, path, tag, digest, fully normalised, familiar
  const table: Array<[string, string, string, string | undefined, string | undefined, string, string]> = [
    ['alpine', 'docker.io', 'library/alpine', undefined, undefined, 'docker.io/library/alpine', 'alpine'],
    ['alpine:3.20', 'docker.io', 'library/alpine', '3.20', undefined, 'docker.io/library/alpine:3.20', 'alpine:3.20'],
    ['library/alpine', 'docker.io', 'library/alpine', undefined, undefined, 'docker.io/library/alpine', 'alpine'],
    ['docker.io/alpine', 'docker.io', 'library/alpine', undefined, undefined, 'docker.io/library/alpine', 'alpine'],
    ['docker.io/library/alpine:latest', 'docker.io', 'library/alpine', 'latest', undefined, 'docker.io/library/alpine:latest', 'alpine:latest'],
    ['index.docker.io/x', 'docker.io', 'library/x', undefined, undefined, 'docker.io/library/x', 'x'],
    ['index.docker.io/user/x:1', 'docker.io', 'user/x', '1', undefined, 'docker.io/user/x:1', 'user/x:1'],
    ['user/app', 'docker.io', 'user/app', undefined, undefined, 'docker.io/user/app', 'user/app'],
    ['user/app:1', 'docker.io', 'user/app', '1', undefined, 'docker.io/user/app:1', 'user/app:1'],
    ['library/a/b', 'docker.io', 'library/a/b', undefined, undefined, 'docker.io/library/a/b', 'library/a/b'],
    ['localhost/x', 'localhost', 'x', undefined, undefined, 'localhost/x', 'localhost/x'],
    ['localhost:5000/x:1', 'localhost:5000', 'x', '1', undefined, 'localhost:5000/x:1', 'localhost:5000/x:1'],
    [`127.0.0.1:5000/a/b@${D}`, '127.0.0.1:5000', 'a/b', undefined, D, `127.0.0.1:5000/a/b@${D}`, `127.0.0.1:5000/a/b@${D}`],
    [`x:1@${D}`, 'docker.io', 'library/x', '1', D, `docker.io/library/x:1@${D}`, `x:1@${D}`],
    [`alpine@${D}`, 'docker.io', 'library/alpine', undefined, D, `docker.io/library/alpine@${D}`, `alpine@${D}`],
    ['ghcr.io/org/team/app:v1.2.3-rc.1', 'ghcr.io', 'org/team/app', 'v1.2.3-rc.1', undefined, 'ghcr.io/org/team/app:v1.2.3-rc.1', 'ghcr.io/org/team/app:v1.2.3-rc.1'],
    ['[::1]:5000/x:1', '[::1]:5000', 'x', '1', undefined, '[::1]:5000/x:1', '[::1]:5000/x:1'],
    // Uppercase in the first component makes it a registry host, as in Docker.
    ['Registry/app', 'Registry', 'app', undefined, undefined, 'Registry/app', 'Registry/app'],
    ['a.b-c9.d/e--f_g.h:TAG_1', 'a.b-c9.d', 'e--f_g.h', 'TAG_1', undefined, 'a.b-c9.d/e--f_g.h:TAG_1', 'a.b-c9.d/e--f_g.h:TAG_1'],
    ['my-user/my.app__x', 'docker.io', 'my-user/my.app__x', undefined, undefined, 'docker.io/my-user/my.app__x', 'my-user/my.app__x'],
    [`${HEX64}:latest`, 'docker.io', `library/${HEX64}`, 'latest', undefined, `docker.io/library/${HEX64}:latest`, `${HEX64}:latest`],
  ];

  it.each(table)('%s', (input, domain, path, tag, digest, normalised, familiar) => {
    const ref = parseReference(input);
    expect(ref).toEqual({ domain, path, ...(tag ? { tag } : {}), ...(digest ? { digest } : {}) });
    expect(formatReference(ref)).toBe(normalised);
    expect(familiarString(ref)).toBe(familiar);
    expect(repository(ref)).toBe(`${domain}/${path}`);
  });

  it.each(table)('familiar and normalised forms parse back to the same reference: %s', (input) => {
    const ref = parseReference(input);
    expect(parseReference(familiarString(ref))).toEqual(ref);
    expect(parseReference(formatReference(ref))).toEqual(ref);
  });
});

describe('parseReference rejects what Docker rejects', () => {
  it.each([
    ['UPPER', /repository name \(library\/UPPER\) must be lowercase/],
    ['user/App', /must be lowercase/],
    ['localhost:5000/Foo:1', /must be lowercase/],
    ['a//b', undefined],
    [':tag', undefined],
    ['x:-bad', /invalid tag/],
    ['x:.bad', /invalid tag/],
    [`x:${'t'.repeat(129)}`, /invalid tag/],
    ['x:', /invalid tag/],
    ['x@sha256:abc', /invalid digest/],
    [`x@sha256:${'A'.repeat(64)}`, /invalid digest/],
    [`x@md5:${'a'.repeat(32)}`, /invalid digest/],
    ['x@', /invalid digest/],
    [HEX64, /64-byte hexadecimal/],
    ['', undefined],
    ['-x', undefined],
    ['x-', undefined],
    ['a/b/', undefined],
    ['/a', undefined],
    ['a b', undefined],
    ['x:1:2', /invalid tag/],
    ['localhost/', undefined],
    ['host:port/x', undefined],
    ['-host.com/x', undefined],
    ['a___b', undefined],
    ['a.-b', undefined],
    // Docker would read this as a domain-less path; a reference without a registry is refused here.
    ['reg_istry.com/x', undefined],
  ] as Array<[string, RegExp | undefined]>)('%s', (input, message) => {
    expectInvalid(input, message);
  });

  it('bounds the name to 255 characters, counted on the normalised name', () => {
    // docker.io/library/ + 237 = 255
    expect(repository(parseReference('a'.repeat(237)))).toHaveLength(255);
    expectInvalid('a'.repeat(238), /must not be more than 255 characters/);
    expectInvalid(`registry.example.com/${'a/'.repeat(200)}b`, /255/);
  });

  it('accepts a 128-character tag', () => {
    expect(parseReference(`x:${'t'.repeat(128)}`).tag).toHaveLength(128);
  });
});

describe('reference helpers', () => {
  it('withDefaultTag adds latest only when there is neither tag nor digest', () => {
    expect(formatReference(withDefaultTag(parseReference('alpine')))).toBe('docker.io/library/alpine:latest');
    expect(formatReference(withDefaultTag(parseReference('alpine:3')))).toBe('docker.io/library/alpine:3');
    expect(formatReference(withDefaultTag(parseReference(`alpine@${D}`)))).toBe(`docker.io/library/alpine@${D}`);
    expect(normalizeReference('localhost:5000/x')).toBe('localhost:5000/x:latest');
  });

  it('familiarName drops docker.io and library/ only', () => {
    expect(familiarName(parseReference('docker.io/library/alpine:1'))).toBe('alpine');
    expect(familiarName(parseReference('user/app'))).toBe('user/app');
    expect(familiarName(parseReference('quay.io/library/x'))).toBe('quay.io/library/x');
  });

  it('parseRepositoryName takes a bare name only', () => {
    expect(parseRepositoryName('alpine')).toEqual({ domain: 'docker.io', path: 'library/alpine' });
    expect(() => parseRepositoryName('alpine:3')).toThrow(/without tag or digest/);
    expect(() => parseRepositoryName(`alpine@${D}`)).toThrow(/without tag or digest/);
    expect(() => parseRepositoryName('Alpine')).toThrow(/lowercase/);
  });

  it.each([
    [HEX64, true],
    [`sha256:${HEX64}`, true],
    ['b', true],
    ['0123abcd', true],
    ['sha256:0123', true],
    ['', false],
    ['sha256:', false],
    ['ABCD', false],
    ['xyz', false],
    ['b'.repeat(65), false],
    ['alpine', false],
  ] as Array<[string, boolean]>)('isImageIdLike(%s) = %s', (input, expected) => {
    expect(isImageIdLike(input)).toBe(expected);
  });
});
