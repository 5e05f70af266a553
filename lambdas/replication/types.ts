/**
 * The data the replication state machine passes between its states. The CDK definition
 * (cdk/constructs/replication.ts) wires these fields by JSONPath; the handlers type them here.
 */
import { z } from 'zod';

const key = z.string().min(1);
export const CopyBatchSchema = z.object({
  cluster: z.string().min(1),
  firstKey: key,
  lastKey: key,
  count: z.number().int(),
});
export const PlanCopiesInputSchema = z.object({ target: z.string().min(1) });
export const CopyBatchInputSchema = z.object({ target: z.string().min(1), batch: CopyBatchSchema });
export const CopyManifestsInputSchema = z.object({ target: z.string().min(1), manifestKeys: z.array(key) });

/**
 * A contiguous key range of one cluster whose objects the target lacks, described by its ends
 * instead of a key list so a run's whole plan fits in a Step Functions payload (256 KiB).
 */
export interface CopyBatch {
  readonly cluster: string;
  /** First key of the range (inclusive). */
  readonly firstKey: string;
  /** Last key of the range (inclusive). */
  readonly lastKey: string;
  /** Objects the planner found missing in the range. */
  readonly count: number;
}

export interface PlanCopiesInput {
  /** Target name from the deploy config. */
  readonly target: string;
}

export interface PlanCopiesOutput {
  readonly target: string;
  readonly batches: CopyBatch[];
  /** Manifests the target lacks; copied last by "Copy and verify manifests". */
  readonly manifestKeys: string[];
  /** Objects in `batches` (not counting manifests). */
  readonly objectCount: number;
  /** True when the plan was cut at the per-run limit; the next run continues. */
  readonly more: boolean;
}

export interface CopyBatchInput {
  readonly target: string;
  readonly batch: CopyBatch;
}

export interface CopyBatchOutput {
  readonly copied: number;
  readonly bytes: number;
  /** Present at the target already (a re-run, or another run got there first). */
  readonly skipped: number;
}

export interface CopyManifestsInput {
  readonly target: string;
  readonly manifestKeys: string[];
}

export interface CopyManifestsOutput {
  readonly copied: number;
  /** Manifests not copied yet because an object they list is not at the target (yet). */
  readonly waiting: { readonly key: string; readonly missingObjects: number }[];
}
