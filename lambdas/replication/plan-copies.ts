/**
 * "List objects missing on target": finds what to copy to one target, cluster by cluster, as
 * batches (manifests separately, to be copied last). Two ways (docs/architecture.md, "Replication
 * at scale"):
 *
 * - the hot path, for a cluster with a cursor: only what is new since it (./cursors.ts), with a
 *   fixed number of LIST requests whatever the archive holds;
 * - reconciliation, for a cluster without a cursor, an execution started with `{"reconcile": true}`
 *   (the daily schedule) or a verify run: ingest and the target are listed in full and compared.
 *   With `verify`, every object is planned, so the batches check each copy's sha256 and report a
 *   corrupt one (never replacing it); otherwise only the objects the target lacks or holds with
 *   another size. What the target's retention policy drops is never planned (lambdas/lib/backups.ts
 *   `keysPolicyDrops`): retention deleted it there, or will, and copying it back would undo that.
 *
 * A small plan (at most one batch's worth of objects, in one cluster or several, no large object,
 * at most 256 MiB) is copied here and then, so a quiet run is one state instead of a Map, its
 * batches and a manifest step; the proposed cursors are committed once the copies
 * are done (here or by "Copy and verify manifests").
 */
import { backupIdOfManifestKey, clusterOfKey, clusterPrefix } from '../../core/keys.ts';
import type { ClusterCursor, TargetCursors } from '../../core/replication-cursor.ts';
import type { RetentionPolicy } from '../../core/retention-planner.ts';
import { isBundleableWalKey } from '../../core/wal-bundle.ts';
import { type IngestBackups, sharedIngestBackups } from '../lib/backups.ts';
import type { LocationFactory } from '../lib/locations.ts';
import { logDecision, withTargetLog } from '../lib/log.ts';
import { publishMetrics, trustViolationMetrics } from '../lib/metrics.ts';
import { copyTuning, findTarget, type PipelineEnv } from '../lib/pipeline-env.ts';
import { defineTask, lambdaHandler } from '../lib/task.ts';
import { copyBatch, packBatches } from './copy-batch.ts';
import { copyManifests } from './copy-manifests.ts';
import {
  deleteStalePlans,
  findNewWork,
  type NewObject,
  readCursors,
  sharedFindNewWork,
  storePlan,
  writePending,
} from './cursors.ts';
import { MAX_MANIFESTS_PER_RUN, noteMissing, type Plan, reconcileCluster } from './plan-reconcile.ts';
import { passable, planTargets, trustViolationsOf } from './plan-targets.ts';
import { abortStaleUploads } from './stale-uploads.ts';
import type {
  CopyBatch,
  PlanCopiesInput,
  PlanCopiesOutput,
  PlanStepInput,
  PlanTargetsOutput,
} from './types.ts';

/** A plan is copied by the plan step itself only up to this many bytes: well inside its timeout. */
const INLINE_COPY_BYTES = 256 * 1024 * 1024;

/**
 * Per timeline, the last WAL key the proposed cursor passes: only settled segments go into a
 * bundle, so each is bundled once (a run that cannot commit its cursor bundles them again).
 */
function bundleThrough(next: ClusterCursor): Record<string, string> {
  const through: Record<string, string> = {};
  for (const [timeline, stream] of Object.entries(next.wal))
    if (stream.after) through[timeline] = stream.after;
  return through;
}

/**
 * For a batch that bundles: the size ingest's listing gave each WAL segment of `keys` (the bundle
 * key's digest needs the members' lengths before any byte is read, and the listing has them, so
 * no HEAD is needed); undefined when none has one. A manifest's sizes are a host's word: not taken.
 */
function listedSizes(keys: readonly string[], byKey: ReadonlyMap<string, NewObject>): CopyBatch['listing'] {
  let oldest: Date | undefined;
  const sizes: (number | null)[] = [];
  for (const key of keys) {
    const object = byKey.get(key);
    const listed = object?.listed === true && isBundleableWalKey(key);
    sizes.push(listed ? object.sizeBytes : null);
    if (listed && (oldest === undefined || object.lastModified < oldest)) oldest = object.lastModified;
  }
  return oldest ? { sizes, oldest: oldest.toISOString() } : undefined;
}

/** The hot path's new objects of one cluster as batches naming their keys. */
function batchNewObjects(
  plan: Plan,
  cluster: string,
  objects: readonly NewObject[],
  batchSize: number,
  bundleThrough?: Record<string, string>,
): void {
  const byKey = new Map(objects.map((o) => [o.key, o]));
  const keys = [...byKey.keys()].sort();
  const through = bundleThrough && Object.keys(bundleThrough).length > 0 ? bundleThrough : undefined;
  for (let i = 0; i < keys.length; i += batchSize) {
    const chunk = keys.slice(i, i + batchSize);
    const listing = through ? listedSizes(chunk, byKey) : undefined;
    plan.batches.push({
      cluster,
      firstKey: chunk[0] as string,
      lastKey: chunk[chunk.length - 1] as string,
      count: chunk.length,
      keys: chunk,
      ...(through ? { bundleThrough: through } : {}),
      ...(listing ? { listing } : {}),
    });
  }
  for (const object of byKey.values()) noteMissing(plan, object);
  plan.objectCount += keys.length;
}

/**
 * A run started by a new manifest looks at that manifest's cluster only: with many hosts these runs
 * are the most frequent, and the scheduled runs cover every cluster anyway.
 */
function clustersOfRun(env: PipelineEnv, input: PlanCopiesInput, reconcile: boolean): string[] {
  const key = input.execution?.key;
  if (reconcile || key === undefined || backupIdOfManifestKey(key) === undefined) return env.clusters;
  const cluster = key.split('/')[1];
  return env.clusters.filter((c) => c === cluster);
}

/** The "planned copies" decision of one cluster: what its batches and manifests hold. */
function logPlanned(plan: Plan, cluster: string, mode: string): void {
  const batches = plan.batches.filter((b) => b.cluster === cluster);
  logDecision('planned copies', {
    cluster,
    mode,
    objects: batches.reduce((n, b) => n + b.count, 0),
    batches: batches.length,
    manifests: plan.manifestKeys.filter((k) => clusterOfKey(k) === cluster).length,
    more: plan.more,
  });
}

/**
 * Reads of ingest the targets planned in one invocation share: the listing of what is new after a
 * cursor they are all at, and each cluster's backups for the reconciliation's retention check.
 */
export interface SharedReads {
  readonly listNewWork?: typeof findNewWork;
  readonly ingestBackups?: IngestBackups;
}

export async function planCopies(
  input: PlanCopiesInput,
  env: PipelineEnv,
  locations: LocationFactory,
  policies: Readonly<Record<string, RetentionPolicy>> = {},
  now: Date = new Date(),
  { listNewWork = findNewWork, ingestBackups }: SharedReads = {},
): Promise<PlanCopiesOutput> {
  const verify = input.verify === true || input.execution?.verify === true;
  const reconcile = verify || input.execution?.reconcile === true;
  const runtimeTarget = findTarget(env, input.target);
  const bundling = runtimeTarget.walBundles === true;
  const target = await locations.target(runtimeTarget);
  const ingest = await locations.ingest();
  const cursors = await readCursors(ingest, input.target);
  const next: TargetCursors = { ...cursors, clusters: {} };
  const plan: Plan = {
    batches: [],
    manifestKeys: [],
    objectCount: 0,
    alreadyPresent: 0,
    expired: 0,
    more: false,
    largest: 0,
    bytes: 0,
  };
  const staleUploads = { aborted: 0, errors: [] as string[] };
  const capacity = env.maxBatchesPerRun * env.batchSize;
  // Plans a failed run left behind: the daily run deletes them, as it aborts orphaned uploads.
  if (reconcile) {
    const deleted = await deleteStalePlans(ingest, input.target, now);
    if (deleted > 0) logDecision('stale plans deleted', { deleted });
  }
  const planned: string[] = [];
  for (const cluster of clustersOfRun(env, input, reconcile)) {
    planned.push(cluster);
    const cursor = cursors.clusters[cluster];
    if (reconcile || !cursor) {
      // Orphaned uploads are old by definition: looking for them daily is soon enough.
      const cleanup = await abortStaleUploads(target, clusterPrefix(cluster), now);
      staleUploads.aborted += cleanup.aborted;
      if (cleanup.error && !staleUploads.errors.includes(cleanup.error))
        staleUploads.errors.push(cleanup.error);
      const after = await reconcileCluster(plan, cluster, {
        ingest,
        target,
        env,
        policy: policies[input.target],
        verify,
        now,
        bundling,
        cursor,
        ingestBackups,
      });
      if (after) next.clusters[cluster] = after;
    } else {
      const room = Math.min(capacity - plan.objectCount, MAX_MANIFESTS_PER_RUN - plan.manifestKeys.length);
      if (room <= 0) plan.more = true;
      else {
        const work = await listNewWork(ingest, cluster, cursor, now, room);
        batchNewObjects(
          plan,
          cluster,
          work.objects,
          env.batchSize,
          bundling ? bundleThrough(work.next) : undefined,
        );
        plan.manifestKeys.push(...work.manifestKeys);
        next.clusters[cluster] = work.next;
        if (work.truncated) plan.more = true;
      }
    }
    if (plan.more) break;
  }
  for (const cluster of planned)
    logPlanned(plan, cluster, verify ? 'verify' : reconcile ? 'reconcile' : 'cursor');
  const base = {
    target: input.target,
    objectCount: plan.objectCount,
    // A verify run plans everything from the start each time, so it does not go round again: what
    // did not fit is verified by the next verify run (raise PGKEEP_MAX_BATCHES_PER_RUN to cover more).
    more: plan.more && !verify,
    truncated: plan.more,
    alreadyPresent: plan.alreadyPresent,
    expired: plan.expired,
    ...(plan.oldestMissing ? { oldestMissing: plan.oldestMissing.toISOString() } : {}),
    listedAt: now.toISOString(),
    verify,
    reconcile,
    staleUploads,
  };
  // Small: at most one batch's worth of objects, though they may be in several clusters' batches
  // (a few segments from each of a few hosts), none large.
  const small =
    !plan.more &&
    plan.objectCount <= env.batchSize &&
    plan.largest <= copyTuning(env).largeObjectBytes &&
    plan.bytes <= INLINE_COPY_BYTES;
  if (small) {
    const results = [];
    for (const batch of plan.batches)
      results.push(await copyBatch({ target: input.target, batch, verify }, env, locations));
    if (results.every((result) => result.large.length === 0)) {
      const manifests = await copyManifests(
        {
          target: input.target,
          manifestKeys: plan.manifestKeys,
          batches: results,
          plan: base,
          ...(input.summary ? { summary: input.summary } : {}),
        },
        env,
        locations,
        now,
        next,
      );
      return {
        ...base,
        batches: [],
        manifestKeys: [],
        done: true,
        pendingCursors: null,
        stored: null,
        manifests,
      };
    }
  }
  const pendingCursors =
    Object.keys(next.clusters).length > 0 ? await writePending(ingest, input.target, next) : null;
  return {
    ...base,
    batches: packBatches(plan.batches, env.batchSize),
    manifestKeys: plan.manifestKeys,
    done: false,
    pendingCursors,
    stored: null,
  };
}

/**
 * The plan function's two entries: one target (`{target}`, the per-target Map's step) or every
 * target at once (`{targets}`, the first step of a run; ./plan-targets.ts). A plan too large to
 * pass between states is stored in ingest and passed by reference (./plan-targets.ts `passable`).
 */
export async function planStep(
  input: PlanStepInput,
  env: PipelineEnv,
  locations: LocationFactory,
  policies: Readonly<Record<string, RetentionPolicy>> = {},
  now?: Date,
): Promise<PlanCopiesOutput | PlanTargetsOutput> {
  // Transient failures are named once: per target by planTargets, for the whole step by the task runner.
  const at = now ?? new Date();
  // Every target plans from one clock, so targets at the same cursor share one listing of ingest.
  const shared: SharedReads = { listNewWork: sharedFindNewWork(), ingestBackups: sharedIngestBackups() };
  const one = (i: PlanCopiesInput) =>
    withTargetLog(i.target, () => planCopies(i, env, locations, policies, at, shared));
  const store = async (target: string, plan: PlanCopiesOutput) =>
    storePlan(await locations.ingest(), target, plan);
  if ('targets' in input) return planTargets(input, one, store);
  return passable(await one(input), store);
}

export const planCopiesTask = defineTask({
  id: 'replication/plan-copies',
  run: (input, { env, locations, policies, now }) => planStep(input, env, locations, policies, now?.()),
  // As "Copy and verify manifests" does when it runs as its own step.
  publish: (output, _input, env) => {
    const violations =
      'anyLeft' in output ? trustViolationsOf(output) : (output.manifests?.summary.trustViolations ?? 0);
    publishMetrics(env.metricNamespace, trustViolationMetrics('replication', violations));
  },
});

export const handler = lambdaHandler(planCopiesTask);
