/**
 * Replication's cursors in ingest (core/replication-cursor.ts says what they mean), and the hot
 * path that uses them: per cluster, what is new since the cursor, found with a fixed number of
 * LIST requests whatever the archive holds:
 *
 * - one listing of `manifests/` after the manifest cursor; a new manifest's objects come from the
 *   manifest itself, read through the validating reader;
 * - one listing of `wal/` after the cursor of the cluster's one timeline, which also finds a newer
 *   timeline (after a failover, while the cursor holds several: a delimiter listing of the
 *   timelines, then one listing per timeline after its cursor).
 *
 * No retention policy runs here: everything the hot path plans is newer than a cursor, and the
 * cursor only passes keys once they are copied. A backup newer than the cursor was never copied to
 * the target by a run that saved its cursor, so retention (which deletes only what is at the
 * target) never deleted it; and WAL after the cursor is younger than the newest backup, which every
 * policy keeps. What a run copied but could not record is found present and skipped; the daily
 * reconciliation runs the policy (`keysPolicyDrops`) over everything.
 */
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import {
  manifestsPrefix,
  pendingCursorKey,
  replicationCursorKey,
  storedPlanKey,
  walPrefix,
} from '../../core/keys.ts';
import {
  advanceStream,
  type ClusterCursor,
  configuredEntries,
  EMPTY_CURSORS,
  type ListedKey,
  parseTargetCursors,
  type TargetCursors,
} from '../../core/replication-cursor.ts';
import { isStoredManifest, readManifestOrReject } from '../../storage/manifests.ts';
import { ObjectNotFoundError } from '../../storage/storage.ts';
import { type Location, listFrom } from '../lib/locations.ts';
import { logDecision } from '../lib/log.ts';
import { type StoredPlan, StoredPlanSchema } from './types.ts';

/** The text of the pipeline's own object at `key`, or undefined when there is none yet. */
export async function readJson(location: Location, key: string): Promise<string | undefined> {
  try {
    return await text(await location.storage.get(key));
  } catch (error) {
    if (error instanceof ObjectNotFoundError) return undefined;
    throw error;
  }
}

/** The target's cursors, or none yet (then every cluster is reconciled first). */
export async function readCursors(ingest: Location, target: string): Promise<TargetCursors> {
  const key = replicationCursorKey(target);
  const json = await readJson(ingest, key);
  return json === undefined ? EMPTY_CURSORS : parseTargetCursors(json, key);
}

/**
 * Stores a plan too large to pass between states (pipeline state: no host can write it, so no host
 * can forge one); returns its key, which the copy and manifest steps read it by.
 */
export async function storePlan(ingest: Location, target: string, plan: unknown): Promise<string> {
  const key = storedPlanKey(target, randomUUID());
  await ingest.storage.put(key, Readable.from([JSON.stringify(plan)]));
  return key;
}

/** Refuses a key that is not one of `target`'s stored plans: a step reads its own target's plan only. */
function checkStoredPlanKey(target: string, key: string): void {
  const runId = key.slice(key.lastIndexOf('/') + 1, -'.json'.length);
  if (key !== storedPlanKey(target, runId))
    throw new Error(
      `stored plan ${key} is not one of target ${target}'s; the state machine passes ${storedPlanKey(target, '<run id>')}`,
    );
}

/**
 * The plan stored at `key` for `target`. It is deleted only when its run is through (or by the
 * daily sweep), so a retried step finds it; gone means the run cannot go on: the next run plans again.
 */
export async function readStoredPlan(ingest: Location, target: string, key: string): Promise<StoredPlan> {
  checkStoredPlanKey(target, key);
  const json = await readJson(ingest, key);
  if (json === undefined)
    throw new Error(
      `stored plan ${key} of target ${target} is gone (deleted by an earlier attempt or the sweep of old plans); the next run plans the target again`,
    );
  const plan = StoredPlanSchema.safeParse(JSON.parse(json));
  if (!plan.success || plan.data.target !== target)
    throw new Error(
      `stored plan ${key} is not a replication plan of target ${target}; the next run plans again`,
    );
  return plan.data;
}

/** Deletes the plan stored at `key` once its run is through with it. */
export async function deleteStoredPlan(ingest: Location, target: string, key: string): Promise<void> {
  checkStoredPlanKey(target, key);
  await ingest.storage.delete(key);
}

/** A stored plan older than this belongs to a run long over (a run times out after 2 hours). */
const STALE_PLAN_MS = 24 * 60 * 60 * 1000;

/** Deletes `target`'s stored plans that a failed run left behind; returns how many. */
export async function deleteStalePlans(ingest: Location, target: string, now: Date): Promise<number> {
  const prefix = storedPlanKey(target, '').slice(0, -'.json'.length);
  let deleted = 0;
  for await (const object of listFrom(ingest, prefix))
    if (now.getTime() - object.lastModified.getTime() > STALE_PLAN_MS) {
      await ingest.storage.delete(object.key);
      deleted += 1;
    }
  return deleted;
}

/** Stores the cursors a run proposes; returns the key to commit later. */
export async function writePending(
  ingest: Location,
  target: string,
  cursors: TargetCursors,
): Promise<string> {
  const key = pendingCursorKey(target, randomUUID());
  await ingest.storage.put(key, Readable.from([JSON.stringify(cursors)]));
  return key;
}

/**
 * Commits `proposed` (or the pending cursors at `pendingKey`) for every cluster not in `dirty`;
 * a dirty cluster (an object failed or a manifest waits) keeps its old cursor, so its next run
 * plans the same keys again. A round that planned every cluster of `configured` drops the cursors
 * of clusters no longer configured. Returns the proposal (every cluster the round planned), or
 * undefined when the pending cursors are gone (an earlier attempt committed them).
 */
export async function commitCursors(
  ingest: Location,
  target: string,
  proposed: TargetCursors | string,
  dirty: ReadonlySet<string>,
  configured: readonly string[],
): Promise<TargetCursors | undefined> {
  let next = proposed;
  if (typeof next === 'string') {
    const json = await readJson(ingest, next);
    if (json === undefined) return undefined;
    next = parseTargetCursors(json, next);
  }
  const changed = Object.keys(next.clusters).filter((c) => !dirty.has(c));
  if (changed.length > 0) {
    const current = await readCursors(ingest, target);
    const clusters = configuredEntries(current.clusters, Object.keys(next.clusters), configured);
    for (const cluster of changed) clusters[cluster] = next.clusters[cluster] as ClusterCursor;
    await ingest.storage.put(
      replicationCursorKey(target),
      Readable.from([JSON.stringify({ ...current, clusters })]),
    );
    for (const cluster of changed) logDecision('cursor advanced', { cluster, target });
  }
  for (const cluster of dirty)
    if (next.clusters[cluster])
      logDecision('cursor kept', { cluster, target, reason: 'an object failed or a manifest waits' });
  if (typeof proposed === 'string') await ingest.storage.delete(proposed);
  return next;
}

/** The timelines (8 hex digits) that have WAL in `cluster`: one delimiter listing, not a listing of the WAL. */
/**
 * The listings that find a cluster's new WAL. With one timeline in the cursor (the common case),
 * one listing of the whole `wal/` prefix after that timeline's cursor: keys sort by timeline, so it
 * also finds every newer timeline, and no older one can begin after it. Otherwise (no cursor yet for
 * any timeline, or several after a failover), a delimiter listing of the timelines and one listing
 * per timeline after its own cursor.
 */
async function walListings(
  ingest: Location,
  cluster: string,
  cursor: ClusterCursor,
): Promise<{ prefix: string; after: string | undefined; timelines: string[] }[]> {
  const known = Object.keys(cursor.wal);
  if (known.length === 1) {
    const timeline = known[0] as string;
    return [
      {
        prefix: walPrefix(cluster),
        after: cursor.wal[timeline]?.after ?? walPrefix(cluster, timeline),
        timelines: [timeline],
      },
    ];
  }
  return (await listTimelines(ingest, cluster)).map((timeline) => ({
    prefix: walPrefix(cluster, timeline),
    after: cursor.wal[timeline]?.after,
    timelines: [timeline],
  }));
}

async function listTimelines(ingest: Location, cluster: string): Promise<string[]> {
  const { storage } = ingest;
  const prefix = storage.prefix + walPrefix(cluster);
  const timelines: string[] = [];
  let continuationToken: string | undefined;
  do {
    const page = await storage.client.send(
      new ListObjectsV2Command({
        Bucket: storage.bucket,
        Prefix: prefix,
        Delimiter: '/',
        ContinuationToken: continuationToken,
      }),
    );
    for (const common of page.CommonPrefixes ?? []) {
      const timeline = common.Prefix?.slice(prefix.length, -1);
      if (timeline && /^[0-9A-F]{8}$/.test(timeline)) timelines.push(timeline);
    }
    continuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (continuationToken);
  return timelines;
}

/** An object the hot path found new, with the size to copy (ingest's listing or the manifest). */
export interface NewObject extends ListedKey {
  readonly sizeBytes: number;
  /** The size is from ingest's listing, not from a manifest a host wrote. */
  readonly listed?: true;
}

export interface NewWork {
  readonly objects: NewObject[];
  readonly manifestKeys: string[];
  /** The cluster's cursor once all of the above is at the target. */
  readonly next: ClusterCursor;
  /** The per-run limit cut the listing; the next round continues from `next`. */
  readonly truncated: boolean;
}

/**
 * A `findNewWork` for one plan step that lists each cluster once for every target whose cursor is
 * at the same place (the usual case): the targets share the LISTs and manifest reads of one.
 * Callers must not change what it returns.
 */
export function sharedFindNewWork(): typeof findNewWork {
  const listings = new Map<string, Promise<NewWork>>();
  return (ingest, cluster, cursor, now, limit) => {
    const key = JSON.stringify([cluster, cursor, now.getTime(), limit]);
    let listing = listings.get(key);
    if (!listing) {
      listing = findNewWork(ingest, cluster, cursor, now, limit);
      listings.set(key, listing);
    }
    return listing;
  };
}

/** What `cluster` has in ingest after `cursor`, at most `limit` objects (manifests included). */
export async function findNewWork(
  ingest: Location,
  cluster: string,
  cursor: ClusterCursor,
  now: Date,
  limit: number,
): Promise<NewWork> {
  const objects: NewObject[] = [];
  const manifestKeys: string[] = [];
  let truncated = false;
  const handledManifests: ListedKey[] = [];
  const skip = new Set(cursor.manifests.copied);
  for await (const object of listFrom(ingest, manifestsPrefix(cluster), cursor.manifests.after)) {
    if (skip.has(object.key)) {
      handledManifests.push(object);
      continue;
    }
    if (objects.length + manifestKeys.length >= limit) {
      truncated = true;
      break;
    }
    const read = await readManifestOrReject(ingest.storage, object.key, object);
    // A rejected manifest is planned all the same: "Copy and verify manifests" rejects it again and
    // reports it (it never copies it); the cursor passes it, and reconciliation reports it daily.
    if (isStoredManifest(read))
      for (const entry of read.manifest.objects)
        objects.push({ key: entry.key, sizeBytes: entry.sizeBytes, lastModified: object.lastModified });
    manifestKeys.push(object.key);
    handledManifests.push(object);
  }
  const wal: ClusterCursor['wal'] = { ...cursor.wal };
  for (const listing of await walListings(ingest, cluster, cursor)) {
    if (truncated) break;
    const handled = new Map<string, ListedKey[]>(listing.timelines.map((t) => [t, []]));
    for await (const object of listFrom(ingest, listing.prefix, listing.after)) {
      // As the delimiter listing would: only `wal/<8 hex digits>/` holds a timeline's WAL.
      const timeline = /^([0-9A-F]{8})\//.exec(object.key.slice(walPrefix(cluster).length))?.[1];
      if (timeline === undefined) continue;
      if (objects.length + manifestKeys.length >= limit) {
        truncated = true;
        break;
      }
      objects.push({ ...object, listed: true });
      handled.set(timeline, [...(handled.get(timeline) ?? []), object]);
    }
    for (const [timeline, keys] of handled)
      wal[timeline] = advanceStream(cursor.wal[timeline], keys, now, false);
  }
  return {
    objects,
    manifestKeys,
    next: { manifests: advanceStream(cursor.manifests, handledManifests, now, true), wal },
    truncated,
  };
}
