/**
 * The plan one target's copies build up, and reconciliation: the full comparison of a cluster's
 * ingest listing with the target's (see ./plan-copies.ts for when each way is used).
 */
import { backupIdOfManifestKey, clusterPrefix, parseWalKey } from '../../core/keys.ts';
import {
  advanceStream,
  type ClusterCursor,
  isSettled,
  type ListedKey,
  type StreamCursor,
} from '../../core/replication-cursor.ts';
import type { RetentionPolicy } from '../../core/retention-planner.ts';
import { isBundleableWalKey } from '../../core/wal-bundle.ts';
import type { ObjectInfo } from '../../storage/storage.ts';
import { WalBundleStorage } from '../../storage/wal-bundles.ts';
import { type IngestBackups, keysPolicyDrops } from '../lib/backups.ts';
import { type Location, listFrom } from '../lib/locations.ts';
import type { PipelineEnv } from '../lib/pipeline-env.ts';
import type { CopyBatch } from './types.ts';
import { segmentsInRange } from './wal-bundle-copy.ts';

/** Manifests per run: each is copied with a handful of HEADs, so a few hundred fit one invocation. */
export const MAX_MANIFESTS_PER_RUN = 200;

/** Merges two ascending listings: each object of `source` with whether `destination` has it at the same size. */
async function* compare(
  source: Iterable<ObjectInfo> | AsyncIterable<ObjectInfo>,
  destination: AsyncIterable<ObjectInfo>,
): AsyncIterable<{ object: ObjectInfo; present: boolean }> {
  const dest = destination[Symbol.asyncIterator]();
  let next = await dest.next();
  for await (const object of source) {
    while (!next.done && next.value.key < object.key) next = await dest.next();
    const present = !next.done && next.value.key === object.key && next.value.sizeBytes === object.sizeBytes;
    yield { object, present };
  }
}

/**
 * The target's objects under `prefix`, in key order, to compare with ingest's listing `inIngest`
 * of the same prefix. At a target with WAL bundles, a segment in a bundle counts as present
 * (storage/wal-bundles.ts); a bundle holding exactly ingest's segments of its range is known by
 * its key, without its index, and one whose range ingest no longer holds anything of (pruned) is
 * not read at all: the comparison never asks for its members. With `verify`, every index is read.
 */
export function targetListing(
  target: Location,
  prefix: string,
  inIngest: readonly ObjectInfo[],
  bundling: boolean,
  verify = false,
): AsyncIterable<ObjectInfo> {
  if (!bundling) return listFrom(target, prefix);
  const options = verify ? {} : { expectedMembers: segmentsInRange(inIngest), skipUnexpected: true };
  return new WalBundleStorage(target.storage, options).list(prefix);
}

export interface Plan {
  readonly batches: CopyBatch[];
  readonly manifestKeys: string[];
  objectCount: number;
  alreadyPresent: number;
  expired: number;
  oldestMissing?: Date;
  more: boolean;
  largest: number;
  bytes: number;
}

/** Notes an object the target lacks that this plan leaves to a later run: the lag shows it. */
function noteLeft(plan: Plan, object: { lastModified: Date }): void {
  if (!plan.oldestMissing || object.lastModified < plan.oldestMissing)
    plan.oldestMissing = object.lastModified;
}

export function noteMissing(plan: Plan, object: { lastModified: Date; sizeBytes: number }): void {
  noteLeft(plan, object);
  plan.largest = Math.max(plan.largest, object.sizeBytes);
  plan.bytes += object.sizeBytes;
}

/** What one cluster's reconciliation compares, and how. */
export interface Reconciliation {
  readonly ingest: Location;
  readonly target: Location;
  readonly env: PipelineEnv;
  readonly policy: RetentionPolicy | undefined;
  readonly verify: boolean;
  readonly now: Date;
  /** The target stores WAL in bundles (docs/architecture.md, "WAL bundles at targets"). */
  readonly bundling: boolean;
  /** The cluster's cursor at the target, if it has one yet. */
  readonly cursor: ClusterCursor | undefined;
  /** Ingest's backups, read once for every target of the run (lambdas/lib/backups.ts). */
  readonly ingestBackups?: IngestBackups;
}

/**
 * At a bundling target, whether a missing WAL segment is the hot path's to bundle rather than the
 * reconciliation's to copy on its own (which would leave it at the target twice once the hot path
 * bundles it): one after the timeline's cursor, which the hot path lists; without a cursor, one
 * not settled, which the cursor this reconciliation proposes does not pass. A segment behind the
 * cursor (more than 15 minutes late) is what the cursor missed: the reconciliation copies it.
 */
function leftToHotPath(object: ListedKey, timeline: string, cursor: ClusterCursor | undefined, now: Date) {
  if (cursor) return object.key > (cursor.wal[timeline]?.after ?? '');
  return !isSettled(object, now);
}

/**
 * The WAL stream a reconciliation proposes, never behind the one it found: everything up to that
 * was at the target, and what landed behind it since (a segment more than 15 minutes late) this
 * reconciliation planned (the cursor is committed only if that arrived). Taken back before such a
 * segment not settled yet, the cursor would make the hot path list again every segment after it,
 * and at a bundled target bundle them all a second time.
 */
function notBehind(proposed: StreamCursor, found: StreamCursor | undefined): StreamCursor {
  if (found?.after === undefined || (proposed.after !== undefined && proposed.after >= found.after))
    return proposed;
  return { after: found.after, copied: [] };
}

/**
 * Full comparison of one cluster (see the module comment). Returns the cluster's cursor as this
 * listing leaves it, or undefined when the plan was cut before the cluster was through.
 *
 * At a bundling target, a timeline's WAL from its first missing segment that is the hot path's
 * ({@link leftToHotPath}) on is left to the hot path: not planned, and the proposed cursor stops
 * before it. That segment is named in a batch with nothing to bundle, which copy-batch leaves
 * waiting and reports, so the lag record shows it as it does the hot path's unsettled segments.
 */
export async function reconcileCluster(
  plan: Plan,
  cluster: string,
  { ingest, target, env, policy, verify, now, bundling, cursor, ingestBackups }: Reconciliation,
): Promise<ClusterCursor | undefined> {
  const prefix = clusterPrefix(cluster);
  const inIngest: ObjectInfo[] = [];
  for await (const object of listFrom(ingest, prefix)) inIngest.push(object);
  const atTarget = targetListing(target, prefix, inIngest, bundling, verify);
  const { dropped } = await keysPolicyDrops(ingest, cluster, policy, now, ingestBackups);
  const manifests: ListedKey[] = [];
  const wal = new Map<string, ListedKey[]>();
  let current: { firstKey: string; lastKey: string; count: number } | undefined;
  const closeBatch = () => {
    if (current) plan.batches.push({ cluster, ...current });
    current = undefined;
  };
  // Per timeline left to the hot path, its first missing segment.
  const left = new Map<string, ObjectInfo>();
  for await (const { object, present } of compare(inIngest, atTarget)) {
    const isManifest = backupIdOfManifestKey(object.key) !== undefined;
    const walFile = parseWalKey(object.key);
    const timeline = walFile?.walFileName.slice(0, 8);
    const planned = () => {
      if (isManifest) manifests.push(object);
      else if (timeline) wal.set(timeline, [...(wal.get(timeline) ?? []), object]);
    };
    if (timeline && left.has(timeline)) continue;
    if (
      bundling &&
      timeline &&
      !present &&
      !dropped.has(object.key) &&
      isBundleableWalKey(object.key) &&
      leftToHotPath(object, timeline, cursor, now)
    ) {
      left.set(timeline, object);
      noteLeft(plan, object);
      // No range may hold it: a range batch copies whatever it finds missing.
      closeBatch();
      continue;
    }
    if (dropped.has(object.key)) {
      plan.expired += 1;
      planned();
      // Missing because retention deleted it: no range may hold it, or the range's copy (which
      // copies whatever it finds missing) would write it back.
      if (!present) closeBatch();
      continue;
    }
    if (present && !verify) {
      plan.alreadyPresent += 1;
      planned();
      continue;
    }
    if (!present) noteMissing(plan, object);
    if (isManifest) {
      if (plan.manifestKeys.length >= MAX_MANIFESTS_PER_RUN) plan.more = true;
      else {
        plan.manifestKeys.push(object.key);
        planned();
      }
      continue;
    }
    if (!current) {
      if (plan.batches.length >= env.maxBatchesPerRun) {
        plan.more = true;
        return undefined;
      }
      current = { firstKey: object.key, lastKey: object.key, count: 0 };
    }
    current.lastKey = object.key;
    current.count += 1;
    plan.objectCount += 1;
    planned();
    if (current.count >= env.batchSize) closeBatch();
  }
  closeBatch();
  if (left.size > 0) {
    if (plan.batches.length >= env.maxBatchesPerRun) plan.more = true;
    else {
      const keys = [...left.values()].map((o) => o.key).sort();
      plan.batches.push({
        cluster,
        firstKey: keys[0] as string,
        lastKey: keys[keys.length - 1] as string,
        count: keys.length,
        keys,
        bundleThrough: {},
      });
      plan.objectCount += keys.length;
    }
  }
  if (plan.more) return undefined;
  return {
    manifests: advanceStream(undefined, manifests, now, true),
    wal: Object.fromEntries(
      [...wal].map(([timeline, keys]) => [
        timeline,
        notBehind(advanceStream(undefined, keys, now, false), cursor?.wal[timeline]),
      ]),
    ),
  };
}
