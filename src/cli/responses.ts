import { z } from 'zod';
import { availabilitySchema, imageInspectSchema, machineSchema, operationSchema, pushResponseSchema } from '../control/wire.js';

/** The answers of the REST endpoints stowctl calls, as wire.ts shapes them. */

export const machinesResponseSchema = z.object({ machines: z.array(machineSchema) });
export const statusResponseSchema = z.object({ records: z.array(availabilitySchema) });
export const operationsResponseSchema = z.object({ operations: z.array(operationSchema) });
export const operationResponseSchema = z.object({ operation: operationSchema });
export { imageInspectSchema, pushResponseSchema };
export const registriesResponseSchema = z.object({
  registries: z.array(z.object({ name: z.string(), url: z.string(), insecure: z.boolean(), project: z.string().nullish() }).passthrough()),
});
/** Answers stowctl prints whole without reading fields. */
export const anyObjectSchema = z.record(z.unknown());
