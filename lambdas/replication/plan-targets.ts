/**
 * "Plan and copy every target": the first step of every replication run plans all targets in one
 * invocation, side by side, and each plan small enough is copied then and there (./plan-copies.ts).
 * When every target is finished, the run ends after one more state (a Choice), so a quiet run is
 * three states entered instead of a Map with three states per target; only what is left (batches,
 * large objects, more rounds, failed copies or plans) goes on to the per-target Map, which plans a
 * target again itself when this step could not, and alerts per target as before.
 *
 * A failure here never stops another target: it is recorded and the target's plan is left to the
 * Map's own step, with its retries and its alert. The per-target planner is passed in, so this
 * module needs nothing of the planner's storage.
 */
import { asStorageUnavailable } from '../../storage/failure.ts';
import {
  type PlanCopiesInput,
  type PlanCopiesOutput,
  type PlannedTarget,
  type PlanTargetsInput,
  type PlanTargetsOutput,
  TARGET_RECORD_FIELDS,
  type TargetRecord,
  type TargetSummary,
} from './types.ts';

/**
 * A plan's JSON above this many bytes is stored in ingest and passed by reference: a state's data
 * is at most 256 KiB, and the first step's output carries every target's plan (two of this size
 * leave room for the rest), as "Copy and verify manifests" carries the plan and the batches' results.
 */
export const PLAN_PAYLOAD_BYTES = 96 * 1024;

/** All the first step's plans together stay under this, however many targets there are. */
const PLANS_PAYLOAD_BYTES = 2 * PLAN_PAYLOAD_BYTES;

/**
 * `plan` as the state machine passes it: whole when small (or finished), else stored by `store`
 * and replaced by references, one per Map item, to its batches; its manifest keys are read from
 * the stored plan too. Everything else (the counts, the pending cursors' key) stays as it is.
 */
export async function passable(
  plan: PlanCopiesOutput,
  store: (target: string, plan: PlanCopiesOutput) => Promise<string>,
  limitBytes = PLAN_PAYLOAD_BYTES,
): Promise<PlanCopiesOutput> {
  if (plan.done || Buffer.byteLength(JSON.stringify(plan)) <= limitBytes) return plan;
  const stored = await store(plan.target, plan);
  return { ...plan, batches: plan.batches.map((_, index) => ({ stored, index })), manifestKeys: [], stored };
}

/** The line of one target in the execution output. */
export function targetRecord(target: string, summary: TargetSummary): TargetRecord {
  const fields = Object.fromEntries(TARGET_RECORD_FIELDS.map((f) => [f, summary[f]]));
  return { target, status: 'ok', ...fields } as TargetRecord;
}

/** A plan the first step copied entirely, with no object failing its check: the target is done. */
function finished(
  plan: PlannedTarget['plan'],
): plan is PlanCopiesOutput & Required<Pick<PlanCopiesOutput, 'manifests'>> {
  return (
    plan !== null &&
    'done' in plan &&
    plan.done &&
    plan.manifests !== undefined &&
    plan.manifests.summary.objectsFailed === 0
  );
}

export async function planTargets(
  input: PlanTargetsInput,
  planOne: (input: PlanCopiesInput) => Promise<PlanCopiesOutput>,
  /** Stores a plan too large to pass on; returns its key. */
  store: (target: string, plan: PlanCopiesOutput) => Promise<string>,
): Promise<PlanTargetsOutput> {
  const execution = input.execution;
  const targets = await Promise.all(
    input.targets.map(async (target): Promise<PlannedTarget> => {
      try {
        const plan = await planOne({ target, ...(execution ? { execution } : {}) });
        const limit = Math.min(PLAN_PAYLOAD_BYTES, Math.floor(PLANS_PAYLOAD_BYTES / input.targets.length));
        return { target, plan: await passable(plan, store, limit) };
      } catch (error) {
        const e = asStorageUnavailable(error) as Error;
        return { target, plan: null, firstAttempt: { error: e.name || 'Error', cause: e.message } };
      }
    }),
  );
  const anyLeft = targets.some((t) => !finished(t.plan));
  return {
    execution,
    targets,
    anyLeft,
    result: {
      // Every target is finished unless anyLeft; only then is this the execution's output.
      targets: targets.flatMap((t) =>
        finished(t.plan) ? [targetRecord(t.target, t.plan.manifests.summary)] : [],
      ),
      anyFailed: false,
    },
  };
}

/** Trust violations the first step's copies found, over every target (for the metric). */
export function trustViolationsOf(output: PlanTargetsOutput): number {
  return output.targets.reduce(
    (n, t) => n + (t.plan && 'manifests' in t.plan ? (t.plan.manifests?.summary.trustViolations ?? 0) : 0),
    0,
  );
}
