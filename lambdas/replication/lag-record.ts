/**
 * Replication's lag record in ingest (core/replication-lag.ts says what it holds): written at the
 * end of every round that planned its clusters in full, by the step that finishes the round
 * ("Copy and verify manifests", which the plan step also runs for a plan it copies itself), and
 * read by freshness: one GET per target, however many clusters.
 *
 * One object per target, so the targets of one run never write the same object. Overlapping runs
 * of one target (a manifest's run beside a scheduled one) may: each write reads the record, merges
 * per cluster (a later listing wins, core/replication-lag.ts `supersedes`) and writes it back, as
 * the cursors are committed. Two writes that interleave can lose one's entries; the cluster then
 * keeps an older entry, with an earlier `listedAt`, which shows more lag, never less.
 */
import { Readable } from 'node:stream';
import { replicationLagKey } from '../../core/keys.ts';
import { configuredEntries } from '../../core/replication-cursor.ts';
import {
  EMPTY_LAG,
  type LagEntry,
  mergeLag,
  parseTargetLag,
  type TargetLag,
} from '../../core/replication-lag.ts';
import type { Location } from '../lib/locations.ts';
import { readJson } from './cursors.ts';
import type { CopyManifestsInput } from './types.ts';

/** The target's lag record, or none yet (freshness then compares listings for each cluster). */
export async function readLag(ingest: Location, target: string): Promise<TargetLag> {
  const key = replicationLagKey(target);
  const json = await readJson(ingest, key);
  return json === undefined ? EMPTY_LAG : parseTargetLag(json, key);
}

/**
 * Per cluster of the round, what it leaves behind: nothing for a clean cluster; for a `dirty` one
 * (an object failed its check, a manifest waits), the oldest failed object of its batches. A batch
 * packing several clusters reports one oldest time for all of them, so its clusters may show a
 * little more lag than they have, never less; a cluster that only has a manifest waiting gets the
 * plan's oldest object (no later than anything of the round).
 */
function roundEntries(
  listedAt: string,
  clusters: Iterable<string>,
  dirty: ReadonlySet<string>,
  batches: NonNullable<CopyManifestsInput['batches']>,
  oldestPlanned: string | undefined,
): Record<string, LagEntry> {
  const entries: Record<string, LagEntry> = {};
  // Segments a bundled target waits for (not settled) are not there yet: the plan's oldest object,
  // as for a waiting manifest, so the lag shows the wait, a little more, never less.
  const waiting = new Set(batches.flatMap((batch) => batch.waitingClusters ?? []));
  for (const cluster of clusters) {
    if (!dirty.has(cluster)) {
      entries[cluster] = waiting.has(cluster)
        ? { listedAt, oldestMissing: oldestPlanned ?? listedAt }
        : { listedAt };
      continue;
    }
    const failed = batches
      .filter((batch) => batch.failed > 0)
      .filter((batch) => batch.cluster === cluster || batch.failedClusters?.includes(cluster))
      .map((batch) => batch.oldestFailed)
      .filter((t): t is string => t !== undefined)
      .sort()[0];
    entries[cluster] = { listedAt, oldestMissing: failed ?? oldestPlanned ?? listedAt };
  }
  return entries;
}

/**
 * Records what a round left behind for the clusters it planned. A round cut at the per-run limit
 * records nothing: the rest of its clusters were not listed, and the execution's next round plans
 * every cluster again. Nor does a plan without `listedAt` (made before the record existed). A
 * round that planned every cluster of `configured` drops the entries of clusters no longer there.
 */
export async function recordRound(
  ingest: Location,
  target: string,
  plan: CopyManifestsInput['plan'],
  clusters: Iterable<string>,
  dirty: ReadonlySet<string>,
  batches: NonNullable<CopyManifestsInput['batches']>,
  configured: readonly string[],
): Promise<void> {
  if (!plan?.listedAt || plan.truncated) return;
  const entries = roundEntries(plan.listedAt, clusters, dirty, batches, plan.oldestMissing);
  if (Object.keys(entries).length === 0) return;
  const current = await readLag(ingest, target);
  const merged = mergeLag(current, entries);
  const next = { ...merged, clusters: configuredEntries(merged.clusters, Object.keys(entries), configured) };
  await ingest.storage.put(replicationLagKey(target), Readable.from([JSON.stringify(next)]));
}
