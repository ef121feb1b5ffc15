import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import type { ControlTls } from '../cluster/tls-files.js';
import type { AvailabilityStore } from './availability.js';
import type { Revocations } from './auth/revocations.js';
import type { ControlConfig } from './config.js';
import type { Db } from './db/database.js';
import type { Machines } from './machines.js';
import type { ControlMetrics } from './metrics.js';
import type { OperationRunner } from './operations/runner.js';
import type { UploadWaiters } from './operations/push.js';
import type { OperationStore } from './operations/store.js';

/** Everything the control plane's routes and workers share; built once in control.ts. */
export interface ControlContext {
  config: ControlConfig;
  db: Db;
  machines: Machines;
  availability: AvailabilityStore;
  operations: OperationStore;
  runner: OperationRunner;
  uploads: UploadWaiters;
  log: Logger;
  metrics: ControlMetrics;
  /** Tokens the agents must refuse (revoked API keys, ended operations). */
  revocations: Revocations;
  /** Set when the control plane serves TLS: its material, and the dispatcher that reaches agents with its certificate. */
  tls?: ControlTls & { agentDispatcher: Dispatcher };
}
