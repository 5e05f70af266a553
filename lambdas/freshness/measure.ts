/**
 * Freshness, measured from the buckets rather than from what the agent claims: per cluster, the
 * age of the newest logical dump (its manifest's stop time) and of the newest WAL object in ingest,
 * the number of gaps in its WAL archive (counted as `pgkeep check --archive` counts them), per
 * target the replication lag (age of the oldest ingest object the target still lacks; 0 when it
 * lacks nothing), and per source the time since its last passed restore verification. Published as
 * metrics; a cluster with no dump or no WAL publishes no age, and the alarms treat missing data as
 * breaching.
 *
 * Cost: the dump, the WAL, the gaps and the last passed verifications come from freshness's own
 * state (archive-state.ts), which needs only what ingest has after it, whatever the archive holds;
 * the lag from the record each replication round leaves (core/replication-lag.ts), one GET per
 * target for every cluster, judged against the newest object the state has seen. A cluster without a record yet (before its first
 * replication run finished) has its lag measured by a full merge of two listings.
 */
import { archiveGapCount, newestStoredAt } from '../../core/freshness-state.ts';
import { clusterPrefix } from '../../core/keys.ts';
import { lagSeconds, type TargetLag } from '../../core/replication-lag.ts';
import type { RetentionPolicy } from '../../core/retention-planner.ts';
import { withWalBundles } from '../../storage/wal-bundles.ts';
import { keysPolicyDrops } from '../lib/backups.ts';
import { type Location, type LocationFactory, listFrom, missingAt } from '../lib/locations.ts';
import { METRICS, type MetricValue, publishMetrics } from '../lib/metrics.ts';
import type { PipelineEnv } from '../lib/pipeline-env.ts';
import { defineTask, lambdaHandler } from '../lib/task.ts';
import { readLag } from '../replication/lag-record.ts';
import { verificationSources } from '../verification/sources.ts';
import {
  readFreshnessState,
  updateFreshnessState,
  updateVerifiedState,
  writeFreshnessState,
} from './archive-state.ts';

export interface FreshnessOutput {
  readonly metrics: MetricValue[];
}

/**
 * The lag of a cluster replication has no record of yet (before its first run finished, or while
 * every run to the target fails): a full merge of two listings, skipping what the target's policy
 * drops (replication never copies it, replication/plan-copies.ts).
 */
async function lagByListing(
  ingest: Location,
  target: Location,
  cluster: string,
  now: Date,
  policy: RetentionPolicy | undefined,
): Promise<number> {
  // A segment in a WAL bundle at the target counts as copied (storage/wal-bundles.ts).
  const copies = withWalBundles(target.storage);
  const prefix = clusterPrefix(cluster);
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
  // One read per target, whatever the number of clusters.
  const lag = new Map<string, TargetLag>();
  for (const target of env.targets) lag.set(target.name, await readLag(ingest, target.name));
  for (const cluster of env.clusters) {
    const read = await readFreshnessState(ingest, cluster);
    const walked = await updateFreshnessState(ingest, cluster, read.state, now);
    const state = await updateVerifiedState(ingest, cluster, walked, now);
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
    // From the verifier's own reports only (verify/<cluster>/ in ingest, which no host may write),
    // as the state has read them; a source never verified publishes nothing, which the alarm
    // treats as stale.
    for (const source of verificationSources(env)) {
      const last = state.verified?.[source.name];
      if (last)
        metrics.push({
          name: METRICS.verificationAgeSeconds,
          value: age(new Date(last)),
          unit: 'Seconds',
          dimensions: { Cluster: cluster, Source: source.name },
        });
    }
    for (const target of env.targets) {
      const entry = lag.get(target.name)?.clusters[cluster];
      metrics.push({
        name: METRICS.replicationLagSeconds,
        value: entry
          ? lagSeconds(entry, newestStoredAt(state), now)
          : await lagByListing(ingest, await locations.target(target), cluster, now, policies[target.name]),
        unit: 'Seconds',
        dimensions: { Cluster: cluster, Target: target.name },
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
