/** Stowage's version, as `--version` and the Docker Engine API's /version report it. */
export const STOWAGE_VERSION = '0.1.0';
