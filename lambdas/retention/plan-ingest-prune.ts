/**
 * "Plan ingest pruning": for one cluster, lists ingest and what each target holds of it, and asks the
 * pure planner (core/ingest-prune.ts) what ingest may let go of: older than `ingest.keepDays` by
 * ingest's LastModified, and at every target (at ingest's size; a bundled segment counts) or
 * dropped by that target's retention policy. Returns the deletions in batches, in the planner's
 * order, for "Delete pruned ingest batch"; while a round is cut at the per-round limit, the machine
 * plans the cluster again, up to MAX_PRUNE_ROUNDS a run (the next run goes on).
 *
 * A step of the retention machine, after every target's retention: it shares retention's
 * schedule, dry run, batch shape and per-run limit (a cut run resumes the next day), and what a
 * target's policy drops is computed from the same view of ingest (lambdas/lib/backups.ts) that
 * replication's reconciliation uses, so a key counts as done here exactly when reconciliation
 * would never copy it back.
 *
 * Trust: only validated manifests are planned, aged by when ingest stored them; a rejected one is
 * listed in `rejected`, raises TrustViolations, and nothing it names is pruned.
 */
import { type IngestObject, type PruneTarget, planIngestPrune } from '../../core/ingest-prune.ts';
import { clusterPrefix } from '../../core/keys.ts';
import type { RetentionPolicy } from '../../core/retention-planner.ts';
import { clusterBackups, policyDrops } from '../lib/backups.ts';
import { type LocationFactory, listFrom, missingAt } from '../lib/locations.ts';
import { logDecision } from '../lib/log.ts';
import { publishMetrics, trustViolationMetrics } from '../lib/metrics.ts';
import { INGEST_LOCATION, PipelineConfigError, type PipelineEnv } from '../lib/pipeline-env.ts';
import { defineTask, lambdaHandler } from '../lib/task.ts';
import { targetListing } from '../replication/plan-reconcile.ts';
import { batchDeletions, listed, MAX_LISTED } from './plan-retention.ts';
import type { PlanIngestPruneInput, PlanIngestPruneOutput } from './types.ts';

export async function planIngestPruning(
  input: PlanIngestPruneInput,
  env: PipelineEnv,
  locations: LocationFactory,
  policies: Readonly<Record<string, RetentionPolicy>>,
  now: Date = new Date(),
): Promise<PlanIngestPruneOutput> {
  const { cluster } = input;
  const dryRun = input.dryRun === true || input.execution?.dryRun === true;
  const round = (input.round ?? 0) + 1;
  const keepDays = env.ingestKeepDays;
  const none = { count: 0, first: [] };
  const nothing = { target: INGEST_LOCATION, cluster, round, dryRun, deleteBatches: [], backupsPruned: 0 };
  if (keepDays === undefined)
    return {
      ...nothing,
      deletions: none,
      walPruned: 0,
      more: false,
      kept: ['ingest.keepDays is not set: ingest is never pruned'],
      rejected: none,
    };
  if (!env.clusters.includes(cluster))
    throw new PipelineConfigError(
      `unknown cluster "${cluster}" to prune; known clusters: ${env.clusters.join(', ') || '(none)'}`,
    );
  const ingest = await locations.ingest();
  const prefix = clusterPrefix(cluster);
  const inIngest: IngestObject[] = [];
  for await (const object of listFrom(ingest, prefix)) inIngest.push(object);
  const view = await clusterBackups(ingest, ingest, cluster);
  const targets: PruneTarget[] = [];
  for (const runtime of env.targets) {
    const target = await locations.target(runtime);
    // Held: every ingest key the merged listings do not report missing (or at another size).
    const holds = new Set(inIngest.map((o) => o.key));
    const listing = targetListing(target, prefix, inIngest, runtime.walBundles === true);
    for await (const missing of missingAt(inIngest, listing)) holds.delete(missing.key);
    targets.push({ name: runtime.name, holds, drops: policyDrops(view, policies[runtime.name], now) });
  }
  const plan = planIngestPrune({
    backups: view.backups,
    walFiles: view.walFiles,
    objects: new Map(inIngest.map((o) => [o.key, o])),
    targets,
    keepDays,
    now,
  });
  logDecision('ingest pruning planned', {
    cluster,
    round,
    backups: plan.backupsPruned,
    wal: plan.walPruned,
    kept: plan.kept.join('; ') || undefined,
    dryRun,
  });
  const deletions = plan.deletions.map((d) => ({ cluster, ...d }));
  const { thisRun, deleteBatches } = batchDeletions(deletions, [cluster], dryRun);
  return {
    ...nothing,
    keepDays,
    deleteBatches,
    deletions: { count: thisRun.length, first: listed(thisRun) },
    backupsPruned: plan.backupsPruned,
    walPruned: plan.walPruned,
    more: deletions.length > thisRun.length,
    kept: plan.kept.slice(0, 3),
    rejected: { count: view.rejected.length, first: view.rejected.slice(0, MAX_LISTED) },
  };
}

export const planIngestPruneTask = defineTask({
  id: 'retention/plan-ingest-prune',
  run: (input, { env, locations, policies, now }) =>
    planIngestPruning(input, env, locations, policies, now?.()),
  publish: (output, _input, env) =>
    publishMetrics(env.metricNamespace, trustViolationMetrics('retention', output.rejected.count)),
});

export const handler = lambdaHandler(planIngestPruneTask);
