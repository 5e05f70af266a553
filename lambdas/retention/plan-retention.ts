/**
 * "Plan retention for target": reads what one target holds (manifests, verification reports, WAL),
 * asks the pure planner (core/retention-planner.ts) what the target's policy keeps, and returns the
 * deletions in batches, in the planner's order.
 *
 * Object Lock: every object the first plan would delete is asked for its lock (HeadObject's
 * retain-until date and legal hold), and the plan is made again with the locked keys, so a locked
 * object is skipped and reported, never attempted (a backup with a locked object is left whole).
 * Only the planned deletions are asked, not every object of the target.
 *
 * Dry run (`{"dryRun": true}` as the execution input): plans and reports, deletes nothing.
 *
 * Trust: only validated manifests are planned (lambdas/lib/backups.ts); a rejected one is listed
 * in `rejected` and raises the TrustViolations metric, and nothing it names is deleted. Backups are
 * aged by when ingest stored their manifest, and "verified" is read from ingest's `verify/` only.
 */
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { planRetention, type RetentionPolicy } from '../../core/retention-planner.ts';
import { clusterBackups } from '../lib/backups.ts';
import type { Location, LocationFactory } from '../lib/locations.ts';
import { logDecision } from '../lib/log.ts';
import { publishMetrics, trustViolationMetrics } from '../lib/metrics.ts';
import { findTarget, PipelineConfigError, type PipelineEnv } from '../lib/pipeline-env.ts';
import { objectIn } from '../lib/s3-copy.ts';
import { defineTask, lambdaHandler } from '../lib/task.ts';
import type { DeleteBatch, ListedKeys, PlanRetentionInput, PlanRetentionOutput } from './types.ts';

/** Keys per "Delete expired batch" and per run: what fits a Step Functions payload with room to spare. */
export const DELETE_BATCH_SIZE = 250;
export const MAX_DELETIONS_PER_RUN = 1500;
/** Deletions and locked objects named (with their reason) in the output; the counts are exact. */
export const MAX_LISTED = 20;

/** What HeadObject says about an object's Object Lock. */
export interface ObjectLockHead {
  readonly ObjectLockRetainUntilDate?: Date;
  readonly ObjectLockLegalHoldStatus?: string;
}

/** Whether an object is under Object Lock at `now`: a legal hold, or a retain-until date after now. */
export function isLockedAt(head: ObjectLockHead, now: Date): boolean {
  if (head.ObjectLockLegalHoldStatus === 'ON') return true;
  return head.ObjectLockRetainUntilDate !== undefined && head.ObjectLockRetainUntilDate > now;
}

/** Tells whether `key` at `location` is under Object Lock at `now`. */
export type LockReader = (location: Location, key: string, now: Date) => Promise<boolean>;

/**
 * The production reader: HeadObject (which returns the lock fields to a caller allowed
 * s3:GetObjectRetention and s3:GetObjectLegalHold). An object gone since the listing is not locked.
 */
export const headObjectLock: LockReader = async (location, key, now) => {
  const object = objectIn(location.storage, key);
  try {
    const head = await object.client.send(new HeadObjectCommand({ Bucket: object.bucket, Key: object.key }));
    return isLockedAt(head, now);
  } catch (error) {
    if ((error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404)
      return false;
    throw error;
  }
};

/** The first {@link MAX_LISTED} of `list`, for the execution output. */
export function listed(list: readonly { key: string; reason: string }[]): ListedKeys['first'] {
  return list.slice(0, MAX_LISTED).map(({ key, reason }) => ({ key, reason }));
}

/**
 * This run's share of `deletions` (in their order, cut at {@link MAX_DELETIONS_PER_RUN}: the next
 * run continues) and its delete batches: none on a dry run. Each batch names the one cluster it
 * was planned for; "Delete expired batch" checks every key against it.
 */
export function batchDeletions<D extends { cluster: string; key: string }>(
  deletions: readonly D[],
  clusters: readonly string[],
  dryRun: boolean,
): { thisRun: D[]; deleteBatches: DeleteBatch[] } {
  const thisRun = deletions.slice(0, MAX_DELETIONS_PER_RUN);
  const deleteBatches: DeleteBatch[] = [];
  if (!dryRun)
    for (const cluster of clusters) {
      const ofCluster = thisRun.filter((d) => d.cluster === cluster).map((d) => d.key);
      for (let i = 0; i < ofCluster.length; i += DELETE_BATCH_SIZE)
        deleteBatches.push({ cluster, keys: ofCluster.slice(i, i + DELETE_BATCH_SIZE) });
    }
  return { thisRun, deleteBatches };
}

export async function planTargetRetention(
  input: PlanRetentionInput,
  env: PipelineEnv,
  locations: LocationFactory,
  policies: Record<string, RetentionPolicy>,
  now: Date = new Date(),
  lockOf: LockReader = headObjectLock,
): Promise<PlanRetentionOutput> {
  const dryRun = input.dryRun === true || input.execution?.dryRun === true;
  const policy = policies[input.target];
  if (!policy) throw new PipelineConfigError(`no retention policy for target "${input.target}"`);
  const target = await locations.target(findTarget(env, input.target));
  const ingest = await locations.ingest();
  const deletions: { cluster: string; key: string; reason: string }[] = [];
  const rejected: { key: string; reason: string }[] = [];
  const locked: { key: string; reason: string }[] = [];
  const warnings: string[] = [];
  let keptBackups = 0;
  let expiredBackups = 0;
  for (const cluster of env.clusters) {
    const view = await clusterBackups(target, ingest, cluster);
    rejected.push(...view.rejected);
    const { backups, walFiles } = view;
    if (backups.length === 0) continue;
    const first = planRetention({ backups, walFiles, policy, now });
    const lockedKeys: string[] = [];
    for (const d of first.deletions) if (await lockOf(target, d.key, now)) lockedKeys.push(d.key);
    const plan =
      lockedKeys.length === 0 ? first : planRetention({ backups, walFiles, policy, now, lockedKeys });
    // One line per backup: kept (by which rules), deleted or left locked, and why.
    for (const b of plan.backups)
      logDecision(`backup ${b.action === 'keep' ? 'kept' : b.action === 'delete' ? 'deleted' : 'locked'}`, {
        cluster,
        backupId: b.backupId,
        kind: b.kind,
        keptBy: b.keptBy.join(',') || undefined,
        reason: b.reason,
        dryRun,
      });
    logDecision('wal planned', {
      cluster,
      kept: plan.wal.keptCount,
      deleted: plan.wal.deletedCount,
      keepFrom: plan.wal.keepFrom?.walFileName,
      reason: plan.wal.keepAllReason,
    });
    deletions.push(...plan.deletions.map((d) => ({ cluster, key: d.key, reason: d.reason })));
    locked.push(...plan.locked.map((l) => ({ key: l.key, reason: l.reason })));
    warnings.push(...plan.warnings.map((w) => `${cluster}: ${w}`));
    keptBackups += plan.summary.backupsKept;
    expiredBackups += plan.summary.backupsDeleted;
  }
  const { thisRun, deleteBatches } = batchDeletions(deletions, env.clusters, dryRun);
  return {
    target: input.target,
    dryRun,
    deleteBatches,
    deletions: { count: thisRun.length, first: listed(thisRun) },
    locked: { count: locked.length, first: locked.slice(0, MAX_LISTED) },
    keptBackups,
    expiredBackups,
    more: deletions.length > thisRun.length,
    warnings: warnings.slice(0, 10),
    rejected: { count: rejected.length, first: rejected.slice(0, MAX_LISTED) },
  };
}

export const planRetentionTask = defineTask({
  id: 'retention/plan-retention',
  run: (input, { env, locations, policies, now, lockOf }) =>
    planTargetRetention(input, env, locations, policies, now?.(), lockOf),
  publish: (output, _input, env) =>
    publishMetrics(env.metricNamespace, trustViolationMetrics('retention', output.rejected.count)),
});

export const handler = lambdaHandler(planRetentionTask);
