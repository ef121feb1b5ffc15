import { StowageError } from '../errors.js';

/** An OCI platform, as found in index children and image configs. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string | undefined;
  'os.version'?: string;
}

// containerd's specifier grammar: each component is [A-Za-z0-9_-]+; windows may carry "(os.version)".
const COMPONENT_RE = /^[A-Za-z0-9_-]+$/;
const OS_WITH_VERSION_RE = /^([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.-]*)\))?$/;

const KNOWN_OS = new Set([
  'aix', 'android', 'darwin', 'dragonfly', 'freebsd', 'hurd', 'illumos', 'ios', 'js', 'linux', 'nacl',
  'netbsd', 'openbsd', 'plan9', 'solaris', 'wasip1', 'windows', 'zos',
]);
const KNOWN_ARCH = new Set([
  '386', 'amd64', 'amd64p32', 'arm', 'armbe', 'arm64', 'arm64be', 'ppc64', 'ppc64le', 'loong64', 'mips',
  'mipsle', 'mips64', 'mips64le', 'mips64p32', 'mips64p32le', 'ppc', 'riscv', 'riscv64', 's390', 's390x',
  'sparc', 'sparc64', 'wasm',
  // aliases that normalise to the names above
  'i386', 'x86_64', 'x86-64', 'aarch64', 'armhf', 'armel',
]);

function invalid(input: string, why: string): StowageError {
  return new StowageError('INVALID_PLATFORM', `invalid platform "${input}": ${why}`);
}

/**
 * Parses "os[/arch[/variant]]" (or a bare architecture, as containerd does). Components are lowercased and
 * validated but not normalised, so the value round-trips through formatPlatform; compare with platformMatches.
 */
export function parsePlatform(input: string): Platform {
  const parts = input.split('/');
  if (input === '' || parts.length > 3) throw invalid(input, 'expected os/arch[/variant]');

  const first = OS_WITH_VERSION_RE.exec(parts[0] ?? '');
  if (!first) throw invalid(input, `"${parts[0] ?? ''}" is not a valid component`);
  const head = (first[1] ?? '').toLowerCase();
  const osVersion = first[2];
  for (const part of parts.slice(1)) {
    if (!COMPONENT_RE.test(part)) throw invalid(input, `"${part}" is not a valid component`);
  }

  if (parts.length === 1) {
    // A single component is an OS (default arch) or an architecture (default OS), like containerd.
    if (KNOWN_OS.has(head)) return withOsVersion({ os: head, architecture: defaultPlatform().architecture }, osVersion);
    if (osVersion === undefined && KNOWN_ARCH.has(head)) return { os: 'linux', architecture: head };
    throw invalid(input, 'unknown operating system or architecture');
  }
  const platform: Platform = { os: head, architecture: (parts[1] ?? '').toLowerCase() };
  if (parts[2] !== undefined) platform.variant = parts[2].toLowerCase();
  return withOsVersion(platform, osVersion);
}

function withOsVersion(p: Platform, osVersion: string | undefined): Platform {
  if (osVersion !== undefined && osVersion !== '') p['os.version'] = osVersion;
  return p;
}

/** "linux/arm64/v8"; os.version is left out, as Docker prints it. */
export function formatPlatform(p: Platform): string {
  return p.variant ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}

/** containerd's normalizeArch: aliases folded, arm variant defaulted to v7, arm64's implied v8 dropped. */
function normalizeArch(arch: string, variant: string): { architecture: string; variant: string } {
  switch (arch) {
    case 'i386':
    case '386':
      return { architecture: '386', variant: '' };
    case 'x86_64':
    case 'x86-64':
    case 'amd64':
      return { architecture: 'amd64', variant: variant === 'v1' ? '' : variant };
    case 'aarch64':
    case 'arm64':
      if (variant === '8' || variant === 'v8' || variant === 'v8.0') return { architecture: 'arm64', variant: '' };
      if (variant === '9' || variant === '9.0' || variant === 'v9.0') return { architecture: 'arm64', variant: 'v9' };
      return { architecture: 'arm64', variant };
    case 'armhf':
      return { architecture: 'arm', variant: 'v7' };
    case 'armel':
      return { architecture: 'arm', variant: 'v6' };
    case 'arm':
      if (variant === '' || variant === '7') return { architecture: 'arm', variant: 'v7' };
      if (variant === '5' || variant === '6' || variant === '8') return { architecture: 'arm', variant: `v${variant}` };
      return { architecture: 'arm', variant };
    default:
      return { architecture: arch, variant };
  }
}

/** The canonical form used for comparison (containerd's platforms.Normalize). */
export function normalizePlatform(p: Platform): Platform {
  let os = p.os.toLowerCase();
  if (os === 'macos') os = 'darwin';
  const { architecture, variant } = normalizeArch(p.architecture.toLowerCase(), (p.variant ?? '').toLowerCase());
  const out: Platform = { os, architecture };
  if (variant !== '') out.variant = variant;
  if (p['os.version'] !== undefined) out['os.version'] = p['os.version'];
  return out;
}

function sameExact(a: Platform, b: Platform): boolean {
  return a.os === b.os && a.architecture === b.architecture && (a.variant ?? '') === (b.variant ?? '');
}

/**
 * Does `have` satisfy `want`? OS and architecture must agree after normalisation; a variant in `want` must
 * agree too, while a want without a variant accepts any variant of that architecture.
 */
export function platformMatches(want: Platform, have: Platform): boolean {
  const w = normalizePlatform(want);
  const h = normalizePlatform(have);
  if (w.os !== h.os || w.architecture !== h.architecture) return false;
  if (!want.variant) return true;
  return (w.variant ?? '') === (h.variant ?? '');
}

/**
 * What a machine of platform `p` can also run, best first (containerd's platformVector): older arm variants,
 * arm on arm64, 386 on amd64.
 */
function compatibleFallbacks(p: Platform): Platform[] {
  const out: Platform[] = [];
  const armVector = (variant: string): void => {
    const n = Number.parseInt(variant.replace(/^v/, ''), 10);
    out.push({ os: p.os, architecture: 'arm', variant: `v${n}` });
    for (let v = n - 1; v >= 5; v--) out.push({ os: p.os, architecture: 'arm', variant: `v${v}` });
  };
  if (p.architecture === 'amd64') {
    const n = Number.parseInt((p.variant ?? '').replace(/^v/, ''), 10);
    if (n > 1) for (let v = n - 1; v >= 1; v--) out.push({ os: p.os, architecture: 'amd64', variant: v === 1 ? undefined : `v${v}` });
    out.push({ os: p.os, architecture: '386' });
  } else if (p.architecture === 'arm' && /^v\d+$/.test(p.variant ?? '')) {
    armVector(p.variant ?? '');
    out.shift(); // the first entry is p itself
  } else if (p.architecture === 'arm64') {
    armVector(p.variant && /^v\d+$/.test(p.variant) ? p.variant : 'v8');
  }
  return out;
}

/**
 * Picks the child of an index to use for `want`: an exact (normalised) match first, then any variant of the
 * wanted architecture when `want` names none, then platforms this one can run (arm/v6 on arm/v7, 386 on
 * amd64, …). Children without a platform are never chosen. Throws PLATFORM_NOT_FOUND listing what exists.
 */
export function choosePlatform<T extends { platform?: Platform | undefined }>(children: readonly T[], want: Platform): T {
  const w = normalizePlatform(want);
  const candidates = children
    .map((child) => ({ child, norm: child.platform ? normalizePlatform(child.platform) : undefined }))
    .filter((c): c is { child: T; norm: Platform } => c.norm !== undefined);

  const exact = candidates.find((c) => sameExact(c.norm, w));
  if (exact) return exact.child;
  const loose = candidates.find((c) => c.child.platform !== undefined && platformMatches(want, c.child.platform));
  if (loose) return loose.child;
  for (const fallback of compatibleFallbacks(w)) {
    const hit = candidates.find((c) => sameExact(c.norm, fallback));
    if (hit) return hit.child;
  }

  const available = [...new Set(candidates.map((c) => formatPlatform(c.child.platform as Platform)))];
  throw new StowageError(
    'PLATFORM_NOT_FOUND',
    `no image for platform ${formatPlatform(want)}; available: ${available.length ? available.join(', ') : 'none'}`,
    { details: { wanted: formatPlatform(want), available } },
  );
}

/** Node's process.arch in OCI terms. */
function hostArch(): { architecture: string; variant?: string } {
  switch (process.arch) {
    case 'x64':
      return { architecture: 'amd64' };
    case 'ia32':
      return { architecture: '386' };
    case 'arm64':
      return { architecture: 'arm64' };
    case 'arm': {
      const armVersion = (process.config.variables as Record<string, unknown>)['arm_version'];
      return { architecture: 'arm', variant: typeof armVersion === 'string' && armVersion !== '' ? `v${armVersion}` : 'v7' };
    }
    case 'ppc64':
      // Node only ships little-endian ppc64 builds for Linux.
      return { architecture: 'ppc64le' };
    default:
      return { architecture: process.arch };
  }
}

/** linux plus this machine's architecture, normalised: images are Linux images even on a Mac. */
export function defaultPlatform(): Platform {
  const { architecture, variant } = hostArch();
  return normalizePlatform({ os: 'linux', architecture, variant });
}
