import { describe, expect, it } from 'vitest';
import { StowageError, isStowageError } from '../../src/errors.js';
import {
  choosePlatform,
  defaultPlatform,
  formatPlatform,
  normalizePlatform,
  parsePlatform,
  platformMatches,
  type Platform,
} from '../../src/oci/platform.js';

const p = (s: string): Platform => parsePlatform(s);

describe('parsePlatform / formatPlatform', () => {
  it.each([
    ['linux/arm64/v8', { os: 'linux', architecture: 'arm64', variant: 'v8' }],
    ['linux/amd64', { os: 'linux', architecture: 'amd64' }],
    ['Linux/ARM/v7', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['windows(10.0.17763.1234)/amd64', { os: 'windows', architecture: 'amd64', 'os.version': '10.0.17763.1234' }],
    ['arm64', { os: 'linux', architecture: 'arm64' }],
    ['x86_64', { os: 'linux', architecture: 'x86_64' }],
  ] as Array<[string, Platform]>)('%s', (input, expected) => {
    expect(parsePlatform(input)).toEqual(expected);
  });

  it('round-trips through formatPlatform', () => {
    for (const s of ['linux/arm64/v8', 'linux/amd64', 'linux/arm/v6', 'linux/s390x']) {
      expect(formatPlatform(parsePlatform(s))).toBe(s);
    }
  });

  it('a bare OS gets this machine’s architecture', () => {
    expect(parsePlatform('linux')).toEqual({ os: 'linux', architecture: defaultPlatform().architecture });
  });

  it.each(['', 'linux/', '/amd64', 'linux/amd64/v8/extra', 'linux/am d64', 'linux/amd64/v8!', 'nonsense', 'linux//v7'])(
    'rejects %j with INVALID_PLATFORM',
    (input) => {
      let caught: unknown;
      try {
        parsePlatform(input);
      } catch (err) {
        caught = err;
      }
      expect(isStowageError(caught, 'INVALID_PLATFORM')).toBe(true);
    },
  );
});

describe('normalizePlatform (containerd rules)', () => {
  it.each([
    ['linux/amd64', 'linux/amd64'],
    ['linux/x86_64', 'linux/amd64'],
    ['linux/x86-64', 'linux/amd64'],
    ['linux/amd64/v1', 'linux/amd64'],
    ['linux/amd64/v3', 'linux/amd64/v3'],
    ['linux/aarch64', 'linux/arm64'],
    ['linux/arm64/v8', 'linux/arm64'],
    ['linux/aarch64/8', 'linux/arm64'],
    ['linux/arm64/9', 'linux/arm64/v9'],
    ['linux/arm', 'linux/arm/v7'],
    ['linux/arm/7', 'linux/arm/v7'],
    ['linux/arm/6', 'linux/arm/v6'],
    ['linux/armhf', 'linux/arm/v7'],
    ['linux/armel', 'linux/arm/v6'],
    ['linux/i386', 'linux/386'],
    ['linux/386', 'linux/386'],
    ['MacOS/arm64', 'darwin/arm64'],
  ])('%s -> %s', (input, expected) => {
    expect(formatPlatform(normalizePlatform(p(input)))).toBe(expected);
  });

  it('folds arm64 v9.0 (not writable as a specifier) to v9', () => {
    expect(normalizePlatform({ os: 'linux', architecture: 'arm64', variant: 'v9.0' })).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v9' });
  });

  it('keeps os.version', () => {
    expect(normalizePlatform({ os: 'windows', architecture: 'x86_64', 'os.version': '10.0' })).toEqual({
      os: 'windows',
      architecture: 'amd64',
      'os.version': '10.0',
    });
  });

  it('defaultPlatform is linux with a normalised architecture', () => {
    const d = defaultPlatform();
    expect(d.os).toBe('linux');
    expect(normalizePlatform(d)).toEqual(d);
    if (process.arch === 'x64') expect(d).toEqual({ os: 'linux', architecture: 'amd64' });
    if (process.arch === 'arm64') expect(d).toEqual({ os: 'linux', architecture: 'arm64' });
  });
});

describe('platformMatches', () => {
  it.each([
    ['linux/amd64', 'linux/amd64', true],
    ['linux/amd64', 'linux/x86_64', true],
    ['linux/arm64', 'linux/arm64/v8', true],
    ['linux/arm64/v8', 'linux/arm64', true],
    ['linux/aarch64', 'linux/arm64/v8', true],
    ['linux/arm', 'linux/arm/v6', true], // no variant wanted: any arm will do
    ['linux/arm/v7', 'linux/arm', true], // arm defaults to v7
    ['linux/arm/v7', 'linux/arm/v6', false],
    ['linux/armhf', 'linux/arm/v7', true],
    ['linux/amd64', 'linux/arm64', false],
    ['linux/amd64', 'windows/amd64', false],
    ['linux/386', 'linux/i386', true],
  ] as Array<[string, string, boolean]>)('want %s, have %s -> %s', (want, have, expected) => {
    expect(platformMatches(p(want), p(have))).toBe(expected);
  });
});

describe('choosePlatform', () => {
  const child = (platform: string | undefined, name: string): { name: string; platform?: Platform } =>
    platform ? { name, platform: p(platform) } : { name };
  const index = [
    child('linux/amd64', 'amd64'),
    child('linux/arm/v6', 'armv6'),
    child('linux/arm/v7', 'armv7'),
    child('linux/arm64/v8', 'arm64'),
    child('linux/386', '386'),
    child(undefined, 'attestation'),
    { name: 'unknown', platform: { os: 'unknown', architecture: 'unknown' } },
  ];

  it.each([
    ['linux/amd64', 'amd64'],
    ['linux/x86_64', 'amd64'],
    ['linux/arm64', 'arm64'],
    ['linux/aarch64/v8', 'arm64'],
    ['linux/arm/v7', 'armv7'],
    ['linux/arm', 'armv7'], // arm means arm/v7 first
    ['linux/armel', 'armv6'],
    ['linux/i386', '386'],
  ])('%s picks %s', (want, name) => {
    expect(choosePlatform(index, p(want)).name).toBe(name);
  });

  it('prefers the exact variant even when a compatible one comes first', () => {
    const children = [child('linux/arm/v6', 'v6'), child('linux/arm/v7', 'v7')];
    expect(choosePlatform(children, p('linux/arm/v7')).name).toBe('v7');
  });

  it('falls back to a compatible platform', () => {
    expect(choosePlatform([child('linux/arm/v6', 'v6'), child('linux/arm/v5', 'v5')], p('linux/arm/v7')).name).toBe('v6');
    expect(choosePlatform([child('linux/arm/v7', 'v7')], p('linux/arm64')).name).toBe('v7');
    expect(choosePlatform([child('linux/386', '386')], p('linux/amd64')).name).toBe('386');
  });

  it('accepts an arm64 child without a variant for arm64/v8', () => {
    expect(choosePlatform([child('linux/arm64', 'a')], p('linux/arm64/v8')).name).toBe('a');
  });

  it('throws PLATFORM_NOT_FOUND listing what exists', () => {
    let caught: unknown;
    try {
      choosePlatform(index, p('linux/s390x'));
    } catch (err) {
      caught = err;
    }
    expect(isStowageError(caught, 'PLATFORM_NOT_FOUND')).toBe(true);
    const err = caught as StowageError;
    expect(err.status).toBe(404);
    expect(err.message).toContain('linux/s390x');
    expect(err.message).toContain('linux/amd64, linux/arm/v6, linux/arm/v7, linux/arm64/v8, linux/386');
    expect(err.details?.['available']).toContain('linux/arm64/v8');
  });

  it('never picks arm for amd64 or a lower variant when a higher one is wanted', () => {
    expect(() => choosePlatform([child('linux/arm/v7', 'v7')], p('linux/amd64'))).toThrow(StowageError);
    expect(() => choosePlatform([child('linux/arm/v7', 'v7')], p('linux/arm/v6'))).toThrow(/available: linux\/arm\/v7/);
    expect(() => choosePlatform([], p('linux/amd64'))).toThrow(/available: none/);
  });
});
