/**
 * The plan one target's copies build up, and reconciliation: the full comparison of a cluster's
 * ingest listing with the target's (see ./plan-copies.ts for when each way is used).
 */
import { backupIdOfManifestKey, clusterPrefix, parseWalKey } from '../../core/keys.ts';
import { advanceStream, type ClusterCursor, type ListedKey } from '../../core/replication-cursor.ts';
import type { RetentionPolicy } from '../../core/retention-planner.ts';
import type { ObjectInfo } from '../../storage/storage.ts';
import { WalBundleStorage } from '../../storage/wal-bundles.ts';
import { keysPolicyDrops } from '../lib/backups.ts';
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

export function noteMissing(plan: Plan, object: { lastModified: Date; sizeBytes: number }): void {
  if (!plan.oldestMissing || object.lastModified < plan.oldestMissing)
    plan.oldestMissing = object.lastModified;
  plan.largest = Math.max(plan.largest, object.sizeBytes);
  plan.bytes += object.sizeBytes;
}

/**
 * Full comparison of one cluster (see the module comment). Returns the cluster's cursor as this
 * listing leaves it, or undefined when the plan was cut before the cluster was through.
 */
export async function reconcileCluster(
  plan: Plan,
  cluster: string,
  ingest: Location,
  target: Location,
  env: PipelineEnv,
  policy: RetentionPolicy | undefined,
  verify: boolean,
  now: Date,
  bundling: boolean,
): Promise<ClusterCursor | undefined> {
  const prefix = clusterPrefix(cluster);
  const inIngest: ObjectInfo[] = [];
  for await (const object of listFrom(ingest, prefix)) inIngest.push(object);
  const atTarget = targetListing(target, prefix, inIngest, bundling, verify);
  const { dropped } = await keysPolicyDrops(ingest, cluster, policy, now);
  const manifests: ListedKey[] = [];
  const wal = new Map<string, ListedKey[]>();
  let current: { firstKey: string; lastKey: string; count: number } | undefined;
  for await (const { object, present } of compare(inIngest, atTarget)) {
    const isManifest = backupIdOfManifestKey(object.key) !== undefined;
    const walFile = parseWalKey(object.key);
    const planned = () => {
      if (isManifest) manifests.push(object);
      else if (walFile) {
        const timeline = walFile.walFileName.slice(0, 8);
        wal.set(timeline, [...(wal.get(timeline) ?? []), object]);
      }
    };
    if (dropped.has(object.key)) {
      plan.expired += 1;
      planned();
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
    if (current.count >= env.batchSize) {
      plan.batches.push({ cluster, ...current });
      current = undefined;
    }
  }
  if (current) plan.batches.push({ cluster, ...current });
  if (plan.more) return undefined;
  return {
    manifests: advanceStream(undefined, manifests, now, true),
    wal: Object.fromEntries(
      [...wal].map(([timeline, keys]) => [timeline, advanceStream(undefined, keys, now, false)]),
    ),
  };
}
