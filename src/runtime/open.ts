import { join } from 'node:path';
import { openStore } from '../store/index.js';
import type { ContentStoreApi, ImageIndexApi } from '../store/types.js';
import { ContainerdRuntime } from './containerd/adapter.js';
import { DockerRuntime } from './docker/adapter.js';
import type { HandOver, RuntimeAdapter } from './runtime.js';

export interface RuntimeConfig {
  kind: 'none' | 'containerd' | 'docker';
  containerd: { socket: string; namespace: string; snapshotter: string };
  docker: { socket: string };
}

/** Stowage's own store as the machine's image store: nothing to hand over, nothing to follow. */
class NoRuntime implements RuntimeAdapter {
  readonly kind = 'none' as const;
  constructor(
    readonly store: ContentStoreApi,
    readonly images: ImageIndexApi,
  ) {}
  async start(): Promise<void> {}
  async handOver(_image: HandOver): Promise<void> {}
  async remove(): Promise<void> {}
  async sync(): Promise<void> {}
  holds(): boolean {
    return true;
  }
  onHoldsChange(): () => void {
    return () => undefined;
  }
  async close(): Promise<void> {
    this.images.close();
  }
}

/** The configured runtime adapter, with its store and image records under `dataDir`. */
export async function openRuntime(config: RuntimeConfig, dataDir: string, log?: (message: string) => void): Promise<RuntimeAdapter> {
  if (config.kind === 'containerd') return ContainerdRuntime.open({ ...config.containerd, dataDir, ...(log ? { log } : {}) });
  if (config.kind === 'docker') return DockerRuntime.open({ socket: config.docker.socket, dataDir, ...(log ? { log } : {}) });
  const { store, images } = await openStore(join(dataDir, 'store'));
  return new NoRuntime(store, images);
}
