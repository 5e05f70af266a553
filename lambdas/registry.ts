/**
 * The pipeline's Lambda handlers, one declaration each: the handler id (which names its module,
 * `replication/copy-batch` -> lambdas/replication/copy-batch.ts, exporting `handler`) and the zod
 * schema its input must pass. The CDK constructs take a {@link HandlerId} and resolve the module
 * with {@link handlerEntry}; the deployed handler and the local bindings both parse through
 * {@link parseHandlerInput}. Only the schemas are imported here (zod, no AWS SDK), so the CDK app
 * can import this without loading the work code; lambdas/tasks.ts binds each id to its work.
 */
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { parseInput } from './lib/input.ts';
import {
  CopyBatchStepInputSchema,
  CopyLargeInputSchema,
  CopyManifestsInputSchema,
  PlanStepInputSchema,
} from './replication/types.ts';
import {
  DeleteBatchInputSchema,
  PlanIngestPruneInputSchema,
  PlanRetentionInputSchema,
} from './retention/types.ts';
import { PickBackupInputSchema, RecordResultInputSchema } from './verification/types.ts';

export const HANDLERS = {
  'replication/plan-copies': { input: PlanStepInputSchema },
  'replication/copy-batch': { input: CopyBatchStepInputSchema },
  'replication/copy-manifests': { input: CopyManifestsInputSchema },
  'replication/copy-large': { input: CopyLargeInputSchema },
  'retention/plan-retention': { input: PlanRetentionInputSchema },
  'retention/delete-batch': { input: DeleteBatchInputSchema },
  'retention/plan-ingest-prune': { input: PlanIngestPruneInputSchema },
  // The execution input; a run started without one picks by staleness.
  'verification/pick-backup': { input: z.preprocess((input) => input ?? {}, PickBackupInputSchema) },
  'verification/record-result': { input: RecordResultInputSchema },
  // Invoked by a schedule, whose event carries nothing the handler uses.
  'freshness/measure': { input: z.unknown() },
} as const satisfies Record<string, { readonly input: z.ZodType }>;

/** A pipeline handler's id: `replication/copy-batch`. */
export type HandlerId = keyof typeof HANDLERS;

/** What the handler's work function receives: its input after parsing. */
export type HandlerInput<I extends HandlerId> = z.output<(typeof HANDLERS)[I]['input']>;

export const HANDLER_IDS = Object.keys(HANDLERS) as HandlerId[];

/** The handler's module on disk (absolute path), the entry the CDK bundles. */
export function handlerEntry(id: HandlerId): string {
  return fileURLToPath(new URL(`./${id}.ts`, import.meta.url));
}

/**
 * `input` parsed by the handler's schema; an InvalidHandlerInputError naming the handler and the
 * field when the state machine sent something else.
 */
export function parseHandlerInput<I extends HandlerId>(id: I, input: unknown): HandlerInput<I> {
  return parseInput(HANDLERS[id].input as z.ZodType<HandlerInput<I>>, input, id);
}
