/**
 * Backend.AI names architectures as the kernel does (x86_64, aarch64); OCI platforms use Go's names
 * (amd64, arm64). The catalog stores the OCI name; Backend.AI-facing surfaces show and accept the
 * kernel's name, and accept the OCI one too.
 */

const TO_BACKENDAI: Readonly<Record<string, string>> = { amd64: 'x86_64', arm64: 'aarch64', '386': 'x86' };
/** Every spelling Backend.AI's clients and agents use, to the OCI name. */
const TO_OCI: Readonly<Record<string, string>> = {
  x86_64: 'amd64',
  amd64: 'amd64',
  x64: 'amd64',
  aarch64: 'arm64',
  arm64: 'arm64',
  x86: '386',
  x32: '386',
  i686: '386',
  '386': '386',
};

export function backendAiArchitecture(ociArchitecture: string): string {
  return TO_BACKENDAI[ociArchitecture] ?? ociArchitecture;
}

export function ociArchitecture(name: string): string {
  const lower = name.trim().toLowerCase();
  return TO_OCI[lower] ?? lower;
}

/** The architecture `image(reference)` means when none is given: the control plane's own (as Backend.AI's manager). */
export function defaultBackendAiArchitecture(): string {
  return backendAiArchitecture(process.arch === 'x64' ? 'amd64' : process.arch === 'ia32' ? '386' : process.arch);
}
