/**
 * The data the replication state machine passes between its states. The CDK definition
 * (cdk/constructs/replication.ts) wires these fields by JSONPath; the handlers type them here.
 */
import { z } from 'zod';
import { hasField, schemaByShape } from '../lib/input.ts';

const key = z.string().min(1);
export const CopyBatchSchema = z.object({
  cluster: z.string().min(1),
  firstKey: key,
  lastKey: key,
  count: z.number().int(),
  /** The hot path's batches name their keys: new objects, not a range holding older ones too. */
  keys: z.array(key).optional(),
  /**
   * For a target with WAL bundles, per timeline the last WAL key the proposed cursor passes:
   * segments up to it are settled and go into one bundle; those after it wait for a later run.
   */
  bundleThrough: z.record(z.string().regex(/^[0-9A-F]{8}$/), key).optional(),
  /**
   * For a target with WAL bundles: the size the plan's own listing of ingest gave each of `keys`
   * (null where it has none from there, e.g. a manifest's objects), so a bundle member costs no
   * HEAD; `oldest`, the oldest LastModified listed among them, dates a failed bundle.
   */
  listing: z
    .object({
      sizes: z.array(z.number().int().nonnegative().nullable()),
      oldest: z.iso.datetime(),
    })
    .optional(),
});
export const PlanCopiesInputSchema = z.object({
  target: z.string().min(1),
  verify: z.boolean().optional(),
  /** The execution's input: `{"verify": true}` starts a verify run, `{"reconcile": true}` a full comparison. */
  execution: z
    .looseObject({
      verify: z.boolean().optional(),
      reconcile: z.boolean().optional(),
      /** The manifest whose arrival started the run (the EventBridge rule): only its cluster is planned. */
      key: z.string().optional(),
    })
    .optional(),
  /** The totals of earlier rounds, for a plan small enough to be copied by the plan step itself. */
  summary: z.lazy(() => SummarySchema).optional(),
});
/** "Plan and copy every target": the first step of every run, one invocation for all targets. */
export const PlanTargetsInputSchema = z.object({
  targets: z.array(z.string().min(1)),
  /** The execution's input, as for one target. */
  execution: PlanCopiesInputSchema.shape.execution,
});
export const CopyBatchInputSchema = z.object({
  target: z.string().min(1),
  batch: CopyBatchSchema,
  verify: z.boolean().optional(),
});
/** Several small batches of different clusters copied by one invocation (two schemas, so an error names its field). */
export const PackedCopyBatchInputSchema = CopyBatchInputSchema.extend({
  batch: z.array(CopyBatchSchema).min(1),
});
/** A Map item of a plan passed by reference: batch `index` of the plan stored at `stored`. */
export const StoredBatchRefSchema = z.object({ stored: key, index: z.number().int().nonnegative() });
export const StoredCopyBatchInputSchema = CopyBatchInputSchema.extend({ batch: StoredBatchRefSchema });
/** The copy function's input: one batch, several packed into one invocation, or one of a stored plan. */
export const CopyBatchStepInputSchema = schemaByShape((input) => {
  const batch = hasField(input, 'batch') ? (input as { batch: unknown }).batch : undefined;
  if (Array.isArray(batch)) return PackedCopyBatchInputSchema;
  return hasField(batch, 'stored') ? StoredCopyBatchInputSchema : CopyBatchInputSchema;
});
/** What the copy and manifest steps read of a stored plan (the pipeline wrote it; checked all the same). */
export const StoredPlanSchema = z.looseObject({
  target: z.string().min(1),
  batches: z.array(z.union([CopyBatchSchema, z.array(CopyBatchSchema)])),
  manifestKeys: z.array(key),
});
export const LargeObjectSchema = z.object({
  key,
  sizeBytes: z.number().int().nonnegative(),
  sha256: z.string().optional(),
  lastModified: z.string(),
});
const CopyStateSchema = z.object({
  sizeBytes: z.number().int().nonnegative(),
  partSizeBytes: z.number().int().positive(),
  partCount: z.number().int().positive(),
  uploadId: z.string().min(1),
  sourceETag: z.string().optional(),
});
const CompletedPartSchema = z.object({
  partNumber: z.number().int().positive(),
  etag: z.string(),
  sizeBytes: z.number().int().nonnegative(),
});
export const CopyLargeInputSchema = z.discriminatedUnion('step', [
  z.object({ step: z.literal('start'), target: z.string().min(1), object: LargeObjectSchema }),
  z.object({
    step: z.literal('parts'),
    target: z.string().min(1),
    object: LargeObjectSchema,
    copy: CopyStateSchema,
    partNumbers: z.array(z.number().int().positive()),
  }),
  z.object({
    step: z.literal('complete'),
    target: z.string().min(1),
    object: LargeObjectSchema,
    copy: CopyStateSchema,
    parts: z.array(z.array(CompletedPartSchema)),
  }),
  z.object({
    step: z.literal('abort'),
    target: z.string().min(1),
    object: LargeObjectSchema,
    copy: CopyStateSchema,
  }),
]);
const SummarySchema = z.object({
  objectsCopied: z.number(),
  objectsSkipped: z.number(),
  objectsFailed: z.number(),
  bytesCopied: z.number(),
  manifestsCopied: z.number(),
  manifestsWaiting: z.number(),
  lagSeconds: z.number(),
  failedKeys: z.array(z.string()),
  /** Objects whose target copy differs from the source (kept, not replaced) plus rejected manifests. */
  trustViolations: z.number(),
});
const BatchResultSchema = z.object({
  copied: z.number(),
  skipped: z.number(),
  failed: z.number(),
  bytes: z.number(),
  failedKeys: z.array(z.string()),
  /** Of `failed`: objects the target holds with other bytes, kept and not replaced. */
  tampered: z.number(),
  oldestFailed: z.string().optional(),
  large: z.array(LargeObjectSchema),
  /** The batch's cluster: a cluster with a failure keeps its replication cursor. */
  cluster: z.string().optional(),
  /** For a batch of several clusters: those with a failure (they keep their cursors). */
  failedClusters: z.array(z.string()).optional(),
  /** Clusters with WAL segments left for a later bundle (not settled): not at the target yet, so lag. */
  waitingClusters: z.array(z.string()).optional(),
});
export const CopyManifestsInputSchema = z.object({
  target: z.string().min(1),
  manifestKeys: z.array(key),
  /** What the round's batch invocations did ("Copy batches to target": one result each). */
  batches: z.array(BatchResultSchema).optional(),
  /**
   * What the round's large copies did ("Copy large objects": one "Complete large copy" result per
   * object the batches left in `large`); empty when they left none.
   */
  largeCopies: z.array(z.object({ copied: z.number(), bytes: z.number() })).optional(),
  plan: z
    .object({
      alreadyPresent: z.number(),
      more: z.boolean(),
      oldestMissing: z.string().optional(),
      /** The plan was cut at the per-run limit: its round records no lag (./lag-record.ts). */
      truncated: z.boolean().optional(),
      /** When the plan started listing ingest (ISO): the lag record's `listedAt`. */
      listedAt: z.string().optional(),
    })
    .optional(),
  /** The totals of earlier rounds of this execution. */
  summary: SummarySchema.optional(),
  /** The cursors the plan proposed (a key in ingest): committed for every cluster without a failure. */
  cursors: z.string().nullable().optional(),
  /** The stored plan the manifest keys are read from (then `manifestKeys` is empty); deleted once done. */
  stored: z.string().min(1).nullable().optional(),
});

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
  /**
   * Exactly these keys (ascending, inside the range): the hot path's new objects. A range of new
   * keys may hold older ones (another database's dumps), which retention may have deleted.
   */
  readonly keys?: string[];
  /** Per timeline, the last WAL key to bundle (targets with WAL bundles; see the schema). */
  readonly bundleThrough?: Record<string, string>;
  /** The listed size of each of `keys` that has one, and the oldest listed time (see the schema). */
  readonly listing?: { readonly sizes: (number | null)[]; readonly oldest: string };
}

export interface PlanCopiesInput {
  /** Target name from the deploy config. */
  readonly target: string;
  /**
   * Plan every object, not only those missing (or of another size) at the target, so
   * "Copy batch to target" checks each copy's sha256 and reports a corrupt one (never replaced).
   */
  readonly verify?: boolean;
  readonly execution?: { readonly verify?: boolean; readonly reconcile?: boolean; readonly key?: string };
  readonly summary?: TargetSummary;
}

export interface PlanCopiesOutput {
  readonly target: string;
  /**
   * What each "Copy batch to target" invocation copies: a batch, small batches of several clusters,
   * or, when the plan is stored (`stored`), a reference to one of its batches.
   */
  readonly batches: (CopyBatch | CopyBatch[] | StoredBatchRef)[];
  /** Manifests the target lacks; copied last by "Copy and verify manifests". */
  readonly manifestKeys: string[];
  /** Objects in `batches` (not counting manifests). */
  readonly objectCount: number;
  /** True when the plan was cut at the per-run limit; the next run continues. */
  readonly more: boolean;
  /** Objects (manifests included) at the target already with the size ingest has: not planned (without `verify`). */
  readonly alreadyPresent: number;
  /** Objects in ingest the target's retention policy drops: never copied, so retention stays done. */
  readonly expired: number;
  /** Orphaned multipart uploads aborted at the target, and why listing them failed (e.g. `NotImplemented`). */
  readonly staleUploads: { readonly aborted: number; readonly errors: string[] };
  /** The plan was cut at the per-run limit (in a verify run, `more` stays false). */
  readonly truncated: boolean;
  /** ISO time of the oldest object planned: how far behind the target is, if it is not copied. */
  readonly oldestMissing?: string;
  /** When the plan started listing ingest (ISO): what ingest stored before is listed or at the target. */
  readonly listedAt: string;
  readonly verify: boolean;
  /** Every cluster was compared in full (a reconciliation or verify run), not only what is new. */
  readonly reconcile: boolean;
  /** The plan was small and copied by the plan step itself: `manifests` holds what it did. */
  readonly done: boolean;
  readonly manifests?: CopyManifestsOutput;
  /** Where the proposed cursors wait for "Copy and verify manifests" to commit them. */
  readonly pendingCursors: string | null;
  /**
   * Where the plan is kept in ingest when it is too large to pass between states (its batches are
   * then references and its manifest keys are read from there); null when it is passed whole.
   */
  readonly stored: string | null;
}

export type PlanTargetsInput = z.infer<typeof PlanTargetsInputSchema>;

/** The plan function's input: every target (the first step of a run) or one target (lambdas/replication/plan-copies.ts `planStep`). */
export const PlanStepInputSchema = schemaByShape((input) =>
  hasField(input, 'targets') ? PlanTargetsInputSchema : PlanCopiesInputSchema,
);
export type PlanStepInput = z.output<typeof PlanStepInputSchema>;

/** One target as the first step left it: for the batch Map, or finished. */
export interface PlannedTarget {
  readonly target: string;
  /**
   * The target's plan (by reference when too large for the state's payload); null when planning
   * failed here, so the Map plans it again with retries and alerts.
   */
  readonly plan: PlanCopiesOutput | null;
  /** Why planning failed in the first step (the Map's own attempt decides whether to alert). */
  readonly firstAttempt?: { readonly error: string; readonly cause: string };
}

/** What "Plan and copy every target" returns: the run ends here unless `anyLeft`. */
export interface PlanTargetsOutput {
  readonly execution: PlanTargetsInput['execution'];
  readonly targets: PlannedTarget[];
  /** A target has batches, large objects, more rounds, a failed copy or a failed plan left. */
  readonly anyLeft: boolean;
  /** The execution's output when nothing is left: the same shape the batch Map path ends with. */
  readonly result: { readonly targets: TargetRecord[]; readonly anyFailed: boolean };
}

/** The summary fields the execution output shows per target (all of TargetSummary but failedKeys). */
export const TARGET_RECORD_FIELDS = [
  'objectsCopied',
  'objectsSkipped',
  'objectsFailed',
  'bytesCopied',
  'lagSeconds',
  'manifestsCopied',
  'manifestsWaiting',
  'trustViolations',
] as const satisfies readonly (keyof TargetSummary)[];

/** One target's line in the execution output: what the console shows per target. */
export type TargetRecord = { readonly target: string; readonly status: 'ok' | 'failed' } & Pick<
  TargetSummary,
  (typeof TARGET_RECORD_FIELDS)[number]
>;

export type StoredBatchRef = z.infer<typeof StoredBatchRefSchema>;
export type StoredPlan = z.infer<typeof StoredPlanSchema>;

export interface CopyBatchInput {
  readonly target: string;
  readonly batch: CopyBatch | CopyBatch[] | StoredBatchRef;
  readonly verify?: boolean;
}

/** An object above the large-object threshold, left to the "Copy large objects" fan-out. */
export type LargeObject = z.infer<typeof LargeObjectSchema>;
export type CopyLargeInput = z.infer<typeof CopyLargeInputSchema>;
export type CopyBatchOutput = z.infer<typeof BatchResultSchema>;
export type CopyManifestsInput = z.infer<typeof CopyManifestsInputSchema>;

/** One target's replication totals for the execution so far: what the console shows per target. */
export type TargetSummary = z.infer<typeof SummarySchema>;

export interface CopyManifestsOutput {
  readonly copied: number;
  /** Manifests not copied yet because an object they list is not at the target (yet). */
  readonly waiting: { readonly key: string; readonly missingObjects: number }[];
  /** Manifests rejected as untrustworthy (first few; the count is in the summary's trustViolations). */
  readonly rejected: { readonly key: string; readonly reason: string }[];
  readonly summary: TargetSummary;
}

/** A target's totals before its first batch; also the initial value the state machine passes. */
export const EMPTY_SUMMARY: TargetSummary = {
  objectsCopied: 0,
  objectsSkipped: 0,
  objectsFailed: 0,
  bytesCopied: 0,
  manifestsCopied: 0,
  manifestsWaiting: 0,
  lagSeconds: 0,
  failedKeys: [],
  trustViolations: 0,
};
