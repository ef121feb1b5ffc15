/**
 * The enumerations of the wire contract (wire.ts builds its schemas from them), in a module without
 * zod so stowctl's option parsers can list them without loading the schemas.
 */
export const operationKinds = ['push', 'distribute', 'preload', 'unload', 'rescan'] as const;
export type OperationKind = (typeof operationKinds)[number];
export const operationStatuses = ['pending', 'running', 'succeeded', 'partially_failed', 'failed', 'cancelled'] as const;
export type OperationStatus = (typeof operationStatuses)[number];
export const targetStatuses = ['pending', 'running', 'present', 'skipped_present', 'absent', 'failed'] as const;
export type TargetStatus = (typeof targetStatuses)[number];
/** A machine heard from lately (online), not for offlineAfterMs (offline), or not since the control plane started (unknown). */
export const machineStatuses = ['online', 'offline', 'unknown'] as const;
export type MachineStatus = (typeof machineStatuses)[number];
