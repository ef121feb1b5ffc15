import type { ContentStoreApi, ImageIndexApi } from '../store/types.js';
import type { FetchPolicy } from './fetch-policy.js';

/** Registry access settings of one agent. */
export interface RegistrySettings {
  /** host[:port] entries reached over plain HTTP (loopback is always plain HTTP). */
  insecureRegistries: string[];
  /** Credentials per registry host[:port]. */
  credentials: Record<string, { username: string; password: string }>;
  /** Registries (host[:port]) that ImageSearch queries through their _catalog. */
  searchRegistries: string[];
}

/** What every Docker Engine API route module gets: the machine's store and settings. */
export interface EngineContext {
  store: ContentStoreApi;
  images: ImageIndexApi;
  registries: RegistrySettings;
  /** Working directory for build contexts, build cache and temporary files. */
  workDir: string;
  /** Reported by /version and /info. */
  version: string;
  /** Largest uncompressed root filesystem `docker import` takes (default DEFAULT_MAX_IMPORT_BYTES). */
  maxImportBytes?: number | undefined;
  /** What `docker import <url>` and `ADD <url>` may download (default DEFAULT_FETCH_POLICY: no private addresses). */
  fetch?: FetchPolicy | undefined;
}

/** 64 GiB, as the largest blob an upload to /v2/ takes. */
export const DEFAULT_MAX_IMPORT_BYTES = 64 * 1024 ** 3;
