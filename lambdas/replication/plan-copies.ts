/**
 * "List objects missing on target": compares ingest with one target, cluster by cluster, and
 * returns what to copy as key-range batches (manifests separately, to be copied last). With
 * `verify`, every object is planned, so the batches check each copy's sha256 and report a corrupt
 * one (never replacing it); otherwise only the objects the target lacks or holds with another size.
 *
 * What the target's retention policy drops is never planned (lambdas/lib/backups.ts
 * `keysPolicyDrops`): retention deleted it there, or will, and copying it back would undo that.
 */
import { AbortMultipartUploadCommand, ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { backupIdOfManifestKey, clusterPrefix } from '../../core/keys.ts';
import type { RetentionPolicy } from '../../core/retention-planner.ts';
import { mapTransient } from '../../storage/failure.ts';
import type { ObjectInfo } from '../../storage/storage.ts';
import { keysPolicyDrops, readPolicies } from '../lib/backups.ts';
import { lambdaDefaults } from '../lib/defaults.ts';
import { parseInput } from '../lib/input.ts';
import { type Location, type LocationFactory, listFrom } from '../lib/locations.ts';
import { findTarget, type PipelineEnv } from '../lib/pipeline-env.ts';
import {
  type CopyBatch,
  type PlanCopiesInput,
  PlanCopiesInputSchema,
  type PlanCopiesOutput,
} from './types.ts';

/** Manifests per run: each is copied with a handful of HEADs, so a few hundred fit one invocation. */
const MAX_MANIFESTS_PER_RUN = 200;

/** Merges two ascending listings: each object of `source` with whether `destination` has it at the same size. */
async function* compare(
  source: AsyncIterable<ObjectInfo>,
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
 * Multipart uploads older than this are orphans: the replication state machine times out after 2
 * hours, so no execution still owns one (a provider killed mid-copy could not be told to abort).
 */
export const STALE_UPLOAD_MS = 3 * 60 * 60 * 1000;

/**
 * Aborts the target's multipart uploads under `prefix` started before `now - STALE_UPLOAD_MS`, so
 * a copy cut short by a provider outage leaves no parts behind (and billed). Best effort: a
 * provider without ListMultipartUploads (or a role without s3:ListBucketMultipartUploads) only
 * leaves them to the bucket's lifecycle rule; what happened is in the plan's output.
 */
export async function abortStaleUploads(
  target: Location,
  prefix: string,
  now: Date,
): Promise<{ aborted: number; error?: string }> {
  const { storage } = target;
  let aborted = 0;
  try {
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    do {
      const page = await storage.client.send(
        new ListMultipartUploadsCommand({
          Bucket: storage.bucket,
          Prefix: storage.prefix + prefix,
          KeyMarker: keyMarker,
          UploadIdMarker: uploadIdMarker,
        }),
      );
      for (const upload of page.Uploads ?? []) {
        if (!upload.Key || !upload.UploadId || !upload.Initiated) continue;
        if (now.getTime() - upload.Initiated.getTime() < STALE_UPLOAD_MS) continue;
        await storage.client.send(
          new AbortMultipartUploadCommand({
            Bucket: storage.bucket,
            Key: upload.Key,
            UploadId: upload.UploadId,
          }),
        );
        aborted += 1;
      }
      keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
      uploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined;
    } while (keyMarker);
    return { aborted };
  } catch (error) {
    return { aborted, error: (error as Error).name || 'Error' };
  }
}

export async function planCopies(
  input: PlanCopiesInput,
  env: PipelineEnv,
  locations: LocationFactory,
  policies: Readonly<Record<string, RetentionPolicy>> = {},
  now: Date = new Date(),
): Promise<PlanCopiesOutput> {
  const verify = input.verify === true || input.execution?.verify === true;
  const target = await locations.target(findTarget(env, input.target));
  const ingest = await locations.ingest();
  const batches: CopyBatch[] = [];
  const manifestKeys: string[] = [];
  let objectCount = 0;
  let alreadyPresent = 0;
  let oldestMissing: Date | undefined;
  let more = false;
  let expired = 0;
  const staleUploads = { aborted: 0, errors: [] as string[] };
  clusters: for (const cluster of env.clusters) {
    const prefix = clusterPrefix(cluster);
    const cleanup = await abortStaleUploads(target, prefix, now);
    staleUploads.aborted += cleanup.aborted;
    if (cleanup.error && !staleUploads.errors.includes(cleanup.error))
      staleUploads.errors.push(cleanup.error);
    const { dropped } = await keysPolicyDrops(ingest, cluster, policies[input.target], now);
    let current: { firstKey: string; lastKey: string; count: number } | undefined;
    for await (const { object, present } of compare(listFrom(ingest, prefix), listFrom(target, prefix))) {
      if (dropped.has(object.key)) {
        expired += 1;
        continue;
      }
      if (present && !verify) {
        alreadyPresent += 1;
        continue;
      }
      if (!present && (!oldestMissing || object.lastModified < oldestMissing))
        oldestMissing = object.lastModified;
      if (backupIdOfManifestKey(object.key) !== undefined) {
        if (manifestKeys.length >= MAX_MANIFESTS_PER_RUN) more = true;
        else manifestKeys.push(object.key);
        continue;
      }
      if (!current) {
        if (batches.length >= env.maxBatchesPerRun) {
          more = true;
          break clusters;
        }
        current = { firstKey: object.key, lastKey: object.key, count: 0 };
      }
      current.lastKey = object.key;
      current.count += 1;
      objectCount += 1;
      if (current.count >= env.batchSize) {
        batches.push({ cluster, ...current });
        current = undefined;
      }
    }
    if (current) batches.push({ cluster, ...current });
  }
  return {
    target: input.target,
    batches,
    manifestKeys,
    objectCount,
    // A verify run plans everything from the start each time, so it does not go round again: what
    // did not fit is verified by the next verify run (raise PGKEEP_MAX_BATCHES_PER_RUN to cover more).
    more: more && !verify,
    truncated: more,
    alreadyPresent,
    expired,
    ...(oldestMissing ? { oldestMissing: oldestMissing.toISOString() } : {}),
    verify,
    staleUploads,
  };
}

export async function handler(input: PlanCopiesInput): Promise<PlanCopiesOutput> {
  const { env, locations } = lambdaDefaults();
  return mapTransient(() =>
    planCopies(
      parseInput(PlanCopiesInputSchema, input, 'replication/plan-copies'),
      env,
      locations,
      readPolicies(),
    ),
  );
}
