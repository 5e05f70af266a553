/**
 * "Copy and verify manifests": a manifest at a target means the backup exists there, so it is
 * copied only after every object it lists is at the target with the size the manifest records
 * (each object's sha256 was checked when "Copy batch to target" copied or skipped it). A manifest
 * whose objects are not all there yet waits for a later run. The manifest itself is checked against
 * the sha256 of its bytes in ingest. A manifest that fails validation (storage/manifests.ts) is
 * never copied: it is counted as failed and as a trust violation, so the run alerts.
 *
 * It also adds up what the round's batches did into the target's summary (the execution output).
 */

import { clusterOfKey } from '../../core/keys.ts';
import type { TargetCursors } from '../../core/replication-cursor.ts';
import { isStoredManifest, readManifestOrReject } from '../../storage/manifests.ts';
import type { LocationFactory } from '../lib/locations.ts';
import { logDecision } from '../lib/log.ts';
import { publishMetrics, trustViolationMetrics } from '../lib/metrics.ts';
import { findTarget, type PipelineEnv } from '../lib/pipeline-env.ts';
import { objectIn, replicateObject } from '../lib/s3-copy.ts';
import { defineTask, lambdaHandler } from '../lib/task.ts';
import { commitCursors, deleteStoredPlan, readStoredPlan } from './cursors.ts';
import { recordRound } from './lag-record.ts';
import {
  type CopyManifestsInput,
  type CopyManifestsOutput,
  EMPTY_SUMMARY,
  type TargetSummary,
} from './types.ts';

const MAX_FAILED_KEYS = 5;

/**
 * The target's totals after this round: the earlier rounds' (`input.summary`), plus what the
 * round's batches and large copies did, the objects the plan found present, and the manifests.
 */
export function addUpTarget(
  input: Pick<CopyManifestsInput, 'batches' | 'largeCopies' | 'plan' | 'summary'>,
  manifests: {
    readonly copied: number;
    readonly skipped: number;
    readonly waiting: number;
    /** Keys of manifests rejected as untrustworthy. */
    readonly rejected: readonly string[];
  },
  now: Date,
): TargetSummary {
  const before = input.summary ?? EMPTY_SUMMARY;
  const batches = input.batches ?? [];
  const large = input.largeCopies ?? [];
  const sum = (f: (b: (typeof batches)[number]) => number) => batches.reduce((n, b) => n + f(b), 0);
  const failed = before.objectsFailed + sum((b) => b.failed) + manifests.rejected.length;
  const failedKeys = [
    ...before.failedKeys,
    ...batches.flatMap((b) => b.failedKeys),
    ...manifests.rejected,
  ].slice(0, MAX_FAILED_KEYS);
  // Lag: zero when the target caught up; else the age of the oldest object still not there.
  const behind = [
    ...batches.map((b) => b.oldestFailed),
    input.plan?.more || manifests.waiting > 0 || batches.some((b) => b.waitingClusters?.length)
      ? input.plan?.oldestMissing
      : undefined,
  ].filter((t): t is string => t !== undefined);
  const oldest = behind.sort()[0];
  const lagSeconds = oldest ? Math.max(0, Math.round((now.getTime() - Date.parse(oldest)) / 1000)) : 0;
  // A later round's plan lists again what earlier rounds copied or counted: count only the rest.
  const presentBefore = Math.max(
    0,
    (input.plan?.alreadyPresent ?? 0) - before.objectsCopied - before.manifestsCopied - before.objectsSkipped,
  );
  const summary: TargetSummary = {
    objectsCopied: before.objectsCopied + sum((b) => b.copied) + large.reduce((n, l) => n + l.copied, 0),
    objectsSkipped: before.objectsSkipped + presentBefore + sum((b) => b.skipped) + manifests.skipped,
    objectsFailed: failed,
    bytesCopied: before.bytesCopied + sum((b) => b.bytes) + large.reduce((n, l) => n + l.bytes, 0),
    manifestsCopied: before.manifestsCopied + manifests.copied,
    manifestsWaiting: manifests.waiting,
    // A failure of an earlier round is still behind.
    lagSeconds: Math.max(before.objectsFailed > 0 ? before.lagSeconds : 0, lagSeconds),
    failedKeys,
    trustViolations: before.trustViolations + sum((b) => b.tampered) + manifests.rejected.length,
  };
  return summary;
}

/** Clusters of this round with an object that failed or a manifest that waits: they keep their cursor. */
function dirtyClusters(input: CopyManifestsInput, waiting: readonly { key: string }[]): Set<string> {
  const dirty = new Set<string>();
  for (const batch of input.batches ?? [])
    if (batch.failed > 0 && batch.cluster) dirty.add(batch.cluster);
    else for (const cluster of batch.failedClusters ?? []) dirty.add(cluster);
  for (const { key } of waiting) dirty.add(clusterOfKey(key) as string);
  return dirty;
}

/**
 * `proposed`: the plan's cursors when the plan step copies a small plan itself (otherwise they are
 * read from `input.cursors`); committed for the clusters that had no failure.
 */
export async function copyManifests(
  input: CopyManifestsInput,
  env: PipelineEnv,
  locations: LocationFactory,
  now: Date = new Date(),
  proposed?: TargetCursors,
): Promise<CopyManifestsOutput> {
  const target = await locations.target(findTarget(env, input.target));
  const ingest = await locations.ingest();
  let copied = 0;
  let skipped = 0;
  const waiting: CopyManifestsOutput['waiting'] = [];
  const rejected: CopyManifestsOutput['rejected'] = [];
  // A plan passed by reference: its manifest keys are in the stored plan, read before anything is copied.
  const manifestKeys = input.stored
    ? (await readStoredPlan(ingest, input.target, input.stored)).manifestKeys
    : input.manifestKeys;
  for (const key of manifestKeys) {
    const read = await readManifestOrReject(ingest.storage, key);
    if (!isStoredManifest(read)) {
      rejected.push(read);
      logDecision('manifest rejected', { cluster: clusterOfKey(key), key, reason: read.reason });
      continue;
    }
    const { manifest, bytes, sha256 } = read;
    let missingObjects = 0;
    for (const object of manifest.objects) {
      const copy = await target.storage.head(object.key);
      if (copy?.sizeBytes !== object.sizeBytes) missingObjects += 1;
    }
    if (missingObjects > 0) {
      waiting.push({ key, missingObjects });
      logDecision('manifest waits', { cluster: clusterOfKey(key), key, missingObjects });
      continue;
    }
    const result = await replicateObject(objectIn(ingest.storage, key), objectIn(target.storage, key), {
      sizeBytes: bytes.length,
      sha256,
    });
    if (result.action === 'copied') copied += 1;
    else skipped += 1;
    logDecision(`manifest ${result.action}`, { cluster: clusterOfKey(key), key });
  }

  const cursors = proposed ?? input.cursors;
  const dirty = dirtyClusters(input, waiting);
  const planned = cursors
    ? await commitCursors(ingest, input.target, cursors, dirty, env.clusters)
    : undefined;
  // What the round left behind, per cluster it planned: freshness reads the lag from it.
  if (planned)
    await recordRound(
      ingest,
      input.target,
      input.plan,
      Object.keys(planned.clusters),
      dirty,
      input.batches ?? [],
      env.clusters,
    );
  // The run is through with its stored plan: a "More to copy?" round plans anew.
  if (input.stored) await deleteStoredPlan(ingest, input.target, input.stored);
  const summary = addUpTarget(
    input,
    { copied, skipped, waiting: waiting.length, rejected: rejected.map((r) => r.key) },
    now,
  );
  return {
    copied,
    waiting: waiting.slice(0, MAX_FAILED_KEYS),
    rejected: rejected.slice(0, MAX_FAILED_KEYS),
    summary,
  };
}

export const copyManifestsTask = defineTask({
  id: 'replication/copy-manifests',
  run: (input, { env, locations }) => copyManifests(input, env, locations),
  // The summary is a running total over the execution's rounds: a later round publishes it again,
  // which the alarm (any violation at all) does not mind.
  publish: (output, _input, env) =>
    publishMetrics(env.metricNamespace, trustViolationMetrics('replication', output.summary.trustViolations)),
});

export const handler = lambdaHandler(copyManifestsTask);
