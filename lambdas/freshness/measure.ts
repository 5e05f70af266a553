/**
 * Freshness, measured from the buckets rather than from what the agent claims: per cluster, the
 * age of the newest logical dump (its manifest's stop time) and of the newest WAL object in ingest,
 * and per target the replication lag (age of the oldest ingest object the target still lacks; 0
 * when it lacks nothing), and per source the time since its last passed restore verification.
 * Published as metrics; a cluster with no dump or no WAL publishes no
 * value, and the alarms treat missing data as breaching.
 *
 * Cost: from replication's cursors (lambdas/replication/cursors.ts), the lag and the newest WAL
 * need only what ingest has after them, whatever the archive holds; a cluster without a cursor yet
 * (before its first reconciliation) is measured by a full merge of two listings.
 */
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { backupIdOfManifestKey, clusterPrefix, manifestsPrefix, walPrefix } from '../../core/keys.ts';
import type { TargetCursors } from '../../core/replication-cursor.ts';
import type { RetentionPolicy } from '../../core/retention-planner.ts';
import { isStoredManifest, readManifestOrReject } from '../../storage/manifests.ts';
import { readVerifyReports } from '../../storage/verify-reports.ts';
import { keysPolicyDrops } from '../lib/backups.ts';
import { type Location, type LocationFactory, listFrom, missingAt } from '../lib/locations.ts';
import { METRICS, type MetricValue, publishMetrics } from '../lib/metrics.ts';
import type { PipelineEnv } from '../lib/pipeline-env.ts';
import { defineTask, lambdaHandler } from '../lib/task.ts';
import { findNewWork, readCursors } from '../replication/cursors.ts';
import { verificationSources } from '../verification/sources.ts';

export interface FreshnessOutput {
  readonly metrics: MetricValue[];
}

/** Objects after a cursor looked at for the lag: more than a day's WAL behind is lag enough to alarm. */
const MAX_LAG_OBJECTS = 2_000;

/** Manifests read at most, newest first, looking for the newest logical one. */
const MAX_MANIFESTS_READ = 50;

async function newestDumpStop(ingest: Location, cluster: string): Promise<Date | undefined> {
  const keys: string[] = [];
  for await (const object of ingest.storage.list(manifestsPrefix(cluster)))
    if (backupIdOfManifestKey(object.key) !== undefined) keys.push(object.key);
  keys.sort().reverse();
  for (const key of keys.slice(0, MAX_MANIFESTS_READ)) {
    // A manifest that fails validation proves no dump (retention and replication report it).
    const read = await readManifestOrReject(ingest.storage, key);
    if (isStoredManifest(read) && read.manifest.kind === 'logical') return new Date(read.manifest.stopTime);
  }
  return undefined;
}

async function newestWal(
  ingest: Location,
  cluster: string,
  cursors: readonly TargetCursors[],
): Promise<Date | undefined> {
  // Only the highest timeline can hold the newest WAL: list the timeline folders, then that one.
  const { storage } = ingest;
  const folders = await storage.client.send(
    new ListObjectsV2Command({
      Bucket: storage.bucket,
      Prefix: storage.prefix + walPrefix(cluster),
      Delimiter: '/',
    }),
  );
  const timelines = (folders.CommonPrefixes ?? [])
    .map((p) => p.Prefix?.slice(storage.prefix.length + walPrefix(cluster).length, -1))
    .filter((t): t is string => t !== undefined && /^[0-9A-F]{8}$/.test(t))
    .sort();
  const highest = timelines.at(-1);
  if (highest === undefined) return undefined;
  // Every key up to a cursor is older than what follows it: start from the least advanced one.
  const afters = cursors.map((c) => c.clusters[cluster]?.wal[highest]?.after);
  const after = afters.includes(undefined) ? undefined : (afters as string[]).sort()[0];
  let newest = after ? (await ingest.storage.head(after))?.lastModified : undefined;
  for await (const object of listFrom(ingest, walPrefix(cluster, highest), after))
    if (!newest || object.lastModified > newest) newest = object.lastModified;
  return newest;
}

async function replicationLagSeconds(
  ingest: Location,
  target: Location,
  cluster: string,
  now: Date,
  policy: RetentionPolicy | undefined,
  cursors: TargetCursors,
): Promise<number> {
  const cursor = cursors.clusters[cluster];
  if (cursor) {
    // Everything up to the cursor is at the target; after it, what the target lacks is the lag.
    let oldest: Date | undefined;
    const { objects, manifestKeys } = await findNewWork(ingest, cluster, cursor, now, MAX_LAG_OBJECTS);
    const candidates = [...objects, ...manifestKeys.map((key) => ({ key, lastModified: now }))];
    for (const object of candidates) {
      if (oldest && object.lastModified >= oldest) continue;
      if (!(await target.storage.head(object.key))) oldest = object.lastModified;
    }
    return oldest ? Math.max(0, (now.getTime() - oldest.getTime()) / 1000) : 0;
  }
  const prefix = clusterPrefix(cluster);
  // What the target's policy drops is never copied (replication/plan-copies.ts): not a lag.
  const { dropped } = await keysPolicyDrops(ingest, cluster, policy, now);
  let oldestMissing: Date | undefined;
  for await (const object of missingAt(listFrom(ingest, prefix), listFrom(target, prefix)))
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
    const dump = await newestDumpStop(ingest, cluster);
    if (dump)
      metrics.push({
        name: METRICS.dumpAgeSeconds,
        value: age(dump),
        unit: 'Seconds',
        dimensions: { Cluster: cluster },
      });
    const wal = await newestWal(ingest, cluster, [...cursors.values()]);
    if (wal)
      metrics.push({
        name: METRICS.walAgeSeconds,
        value: age(wal),
        unit: 'Seconds',
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
