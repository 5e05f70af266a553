/** The data the retention state machine passes between states (cdk/constructs/retention.ts wires it). */
import { z } from 'zod';

export const PlanRetentionInputSchema = z.object({ target: z.string().min(1) });
export const DeleteBatchInputSchema = z.object({
  target: z.string().min(1),
  batch: z.object({ keys: z.array(z.string().min(1)) }),
});

export interface PlanRetentionInput {
  readonly target: string;
}

/** Keys to delete, in the planner's order (a manifest before its objects). */
export interface DeleteBatch {
  readonly keys: string[];
}

export interface PlanRetentionOutput {
  readonly target: string;
  /** Run one after another (the Map runs them with concurrency 1) to keep the planner's order. */
  readonly deleteBatches: DeleteBatch[];
  readonly keptBackups: number;
  readonly expiredBackups: number;
  readonly lockedObjects: number;
  /** True when the deletions were cut at the per-run limit; the next run continues. */
  readonly more: boolean;
  /** The planner's warnings (first few), for the execution history. */
  readonly warnings: string[];
}

export interface DeleteBatchInput {
  readonly target: string;
  readonly batch: DeleteBatch;
}

export interface DeleteBatchOutput {
  readonly deleted: number;
  /** Keys the provider refused to delete because of Object Lock (reported, not failed). */
  readonly locked: string[];
}
