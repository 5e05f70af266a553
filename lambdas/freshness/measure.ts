/**
 * Freshness, measured from the buckets rather than from what the agent claims: per cluster, the
 * age of the newest logical dump (its manifest's stop time) and of the newest WAL object in ingest,
 * the number of gaps in its WAL archive (counted as `pgkeep check --archive` counts them), per
 * target the replication lag (age of the oldest ingest object the target still lacks; 0 when it
 * lacks nothing), and per source the time since its last passed restore verification. Published as
 * metrics; a cluster with no dump or no WAL publishes no age, and the alarms treat missing data as
 * breaching.
 *
 * Cost: the dump, the WAL and the gaps come from freshness's own state (archive-state.ts), the lag
 * from replication's cursors (lambdas/replication/cursors.ts): each needs only what ingest has
 * after it, whatever the archive holds; a cluster without a replication cursor yet (before its
 * first reconciliation) has its lag measured by a full merge of two listings.
 */
import { archiveGapCount } from '../../core/freshness-state.ts';
import { clusterPrefix } from '../../core/keys.ts';
import type { TargetCursors } from '../../core/replication-cursor.ts';
import type { RetentionPolicy } from '../../core/retention-planner.ts';
import { readVerifyReports } from '../../storage/verify-reports.ts';
import { withWalBundles } from '../../storage/wal-bundles.ts';
import { keysPolicyDrops } from '../lib/backups.ts';
import { type Location, type LocationFactory, listFrom, missingAt } from '../lib/locations.ts';
import { METRICS, type MetricValue, publishMetrics } from '../lib/metrics.ts';
import type { PipelineEnv } from '../lib/pipeline-env.ts';
import { defineTask, lambdaHandler } from '../lib/task.ts';
import { findNewWork, readCursors } from '../replication/cursors.ts';
import { verificationSources } from '../verification/sources.ts';
import { readFreshnessState, updateFreshnessState, writeFreshnessState } from './archive-state.ts';

export interface FreshnessOutput {
  readonly metrics: MetricValue[];
}

/** Objects after a cursor looked at for the lag: more than a day's WAL behind is lag enough to alarm. */
const MAX_LAG_OBJECTS = 2_000;

async function replicationLagSeconds(
  ingest: Location,
  target: Location,
  cluster: string,
  now: Date,
  policy: RetentionPolicy | undefined,
  cursors: TargetCursors,
): Promise<number> {
  const cursor = cursors.clusters[cluster];
  // A segment in a WAL bundle at the target counts as copied (storage/wal-bundles.ts).
  const copies = withWalBundles(target.storage);
  if (cursor) {
    // Everything up to the cursor is at the target; after it, what the target lacks is the lag.
    let oldest: Date | undefined;
    const { objects, manifestKeys } = await findNewWork(ingest, cluster, cursor, now, MAX_LAG_OBJECTS);
    const candidates = [...objects, ...manifestKeys.map((key) => ({ key, lastModified: now }))];
    for (const object of candidates) {
      if (oldest && object.lastModified >= oldest) continue;
      if (!(await copies.head(object.key))) oldest = object.lastModified;
    }
    return oldest ? Math.max(0, (now.getTime() - oldest.getTime()) / 1000) : 0;
  }
  const prefix = clusterPrefix(cluster);
  // What the target's policy drops is never copied (replication/plan-copies.ts): not a lag.
  const { dropped } = await keysPolicyDrops(ingest, cluster, policy, now);
  let oldestMissing: Date | undefined;
  for await (const object of missingAt(listFrom(ingest, prefix), copies.list(prefix)))
    if (!dropped.has(object.key) && (!oldestMissing || object.lastModified < oldestMissing))
      oldestMissing = object.lastModified;
  return oldestMissing ? Math.max(0, (now.getTime() - oldestMissing.getTime()) / 1000) : 0;
}

export async function measureFreshness(
  env: PipelineEnv,
  locations: LocationFactory,
  now: Date = new Date(),
  policies: Readonly<Record<string, RetentionPolicy>> = {},
): Promise<FreshnessOutput> {
  const ingest = await locations.ingest();
  const metrics: MetricValue[] = [];
  const age = (t: Date) => Math.max(0, (now.getTime() - t.getTime()) / 1000);
  const cursors = new Map<string, TargetCursors>();
  for (const target of env.targets) cursors.set(target.name, await readCursors(ingest, target.name));
  for (const cluster of env.clusters) {
    const read = await readFreshnessState(ingest, cluster);
    const state = await updateFreshnessState(ingest, cluster, read.state, now);
    await writeFreshnessState(ingest, cluster, state, read.json);
    if (state.newestDump)
      metrics.push({
        name: METRICS.dumpAgeSeconds,
        value: age(new Date(state.newestDump.stopTime)),
        unit: 'Seconds',
        dimensions: { Cluster: cluster },
      });
    // Only the highest timeline can hold the newest WAL.
    const highest = Object.keys(state.wal).sort().at(-1);
    const wal = highest === undefined ? undefined : state.wal[highest]?.newestStoredAt;
    if (wal)
      metrics.push({
        name: METRICS.walAgeSeconds,
        value: age(new Date(wal)),
        unit: 'Seconds',
        dimensions: { Cluster: cluster },
      });
    metrics.push({
      name: METRICS.archiveGaps,
      value: archiveGapCount(state),
      unit: 'Count',
      dimensions: { Cluster: cluster },
    });
    // From the verifier's own reports only (verify/<cluster>/ in ingest, which no host may write);
    // a source never verified publishes nothing, which the alarm treats as stale.
    const reports = await readVerifyReports(ingest.storage, cluster);
    for (const source of verificationSources(env)) {
      const last = reports.filter((r) => r.passed && r.source === source.name).at(-1);
      if (last)
        metrics.push({
          name: METRICS.verificationAgeSeconds,
          value: age(new Date(last.finishedAt)),
          unit: 'Seconds',
          dimensions: { Cluster: cluster, Source: source.name },
        });
    }
    for (const runtimeTarget of env.targets) {
      const target = await locations.target(runtimeTarget);
      metrics.push({
        name: METRICS.replicationLagSeconds,
        value: await replicationLagSeconds(
          ingest,
          target,
          cluster,
          now,
          policies[runtimeTarget.name],
          cursors.get(runtimeTarget.name) as TargetCursors,
        ),
        unit: 'Seconds',
        dimensions: { Cluster: cluster, Target: runtimeTarget.name },
      });
    }
  }
  return { metrics };
}

export const measureFreshnessTask = defineTask({
  id: 'freshness/measure',
  run: (_input, { env, locations, policies, now }) => measureFreshness(env, locations, now?.(), policies),
  publish: (output, _input, env) => publishMetrics(env.metricNamespace, output.metrics),
});

export const handler = lambdaHandler(measureFreshnessTask);
