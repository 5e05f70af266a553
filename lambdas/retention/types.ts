/** The data the retention state machine passes between states (cdk/constructs/retention.ts wires it). */
import { z } from 'zod';

export const PlanRetentionInputSchema = z.object({
  target: z.string().min(1),
  dryRun: z.boolean().optional(),
  /** The execution's input: `{"dryRun": true}` plans and reports without deleting. */
  execution: z.looseObject({ dryRun: z.boolean().optional() }).optional(),
});
export const DeleteBatchInputSchema = z.object({
  target: z.string().min(1),
  batch: z.object({ cluster: z.string().min(1), keys: z.array(z.string().min(1)) }),
});

export interface PlanRetentionInput {
  readonly target: string;
  readonly dryRun?: boolean;
  readonly execution?: { readonly dryRun?: boolean };
}

/** A bounded list for the execution output: the exact count, and the first few with their reason. */
export interface ListedKeys {
  readonly count: number;
  readonly first: { readonly key: string; readonly reason: string }[];
}

/** Keys to delete, in the planner's order (a manifest before its objects), all of one cluster. */
export interface DeleteBatch {
  /** The cluster the batch was planned for: a key outside `v1/<cluster>/` is refused. */
  readonly cluster: string;
  readonly keys: string[];
}

export interface PlanRetentionOutput {
  readonly target: string;
  /** Nothing is deleted: `deleteBatches` is empty, `deletions` says what a real run would delete. */
  readonly dryRun: boolean;
  /** Run one after another (the Map runs them with concurrency 1) to keep the planner's order. */
  readonly deleteBatches: DeleteBatch[];
  /** What this run deletes (or, in a dry run, would delete), and why. */
  readonly deletions: ListedKeys;
  /** Objects the policy drops but Object Lock protects: skipped, never attempted. */
  readonly locked: ListedKeys;
  readonly keptBackups: number;
  readonly expiredBackups: number;
  /** True when the deletions were cut at the per-run limit; the next run continues. */
  readonly more: boolean;
  /** The planner's warnings (first few), for the execution history. */
  readonly warnings: string[];
  /** Manifests that failed validation: never acted on, and alarmed (TrustViolations). */
  readonly rejected: ListedKeys;
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

/**
 * Plans (and delete rounds) per cluster and run: a round deletes at most MAX_DELETIONS_PER_RUN, so
 * a run prunes up to ten days of one host's writes at the reference load, and a backlog (pruning
 * turned on for an old archive) is caught up over the following days.
 */
export const MAX_PRUNE_ROUNDS = 10;

export const PlanIngestPruneInputSchema = z.object({
  cluster: z.string().min(1),
  /** Rounds already done for this cluster in this run. @default 0 */
  round: z.number().int().min(0).optional(),
  dryRun: z.boolean().optional(),
  /** The execution's input: `{"dryRun": true}` plans and reports without deleting. */
  execution: z.looseObject({ dryRun: z.boolean().optional() }).optional(),
});

export interface PlanIngestPruneInput {
  readonly cluster: string;
  readonly round?: number;
  readonly dryRun?: boolean;
  readonly execution?: { readonly dryRun?: boolean };
}

export interface PlanIngestPruneOutput {
  /** Always `ingest`: the delete batches go to "Delete pruned ingest batch" with it. */
  readonly target: string;
  readonly cluster: string;
  /** This round's number (1 for the first): the machine plans again while `more`, up to MAX_PRUNE_ROUNDS. */
  readonly round: number;
  readonly dryRun: boolean;
  /** Ingest's window in days; absent when pruning is off (nothing is planned). */
  readonly keepDays?: number;
  readonly deleteBatches: DeleteBatch[];
  /** What this run deletes from ingest (or, in a dry run, would delete), and why. */
  readonly deletions: ListedKeys;
  readonly backupsPruned: number;
  readonly walPruned: number;
  /** True when the deletions were cut at the per-round limit; the next round (or run) continues. */
  readonly more: boolean;
  /** Why older objects stay. */
  readonly kept: string[];
  /** Manifests that failed validation: never acted on, and alarmed (TrustViolations). */
  readonly rejected: ListedKeys;
}
