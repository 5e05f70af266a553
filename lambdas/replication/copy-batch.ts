import { backupIdOfManifestKey, clusterPrefix } from '../../core/keys.ts';
import { isBundleableWalKey, parseWalBundleKey, walNameOfKey } from '../../core/wal-bundle.ts';
import { type WalBundleStorage, withWalBundles } from '../../storage/wal-bundles.ts';
import { type Location, type LocationFactory, listFrom, missingAt } from '../lib/locations.ts';
import { logDecision } from '../lib/log.ts';
import { copyTuning, findTarget, type PipelineEnv } from '../lib/pipeline-env.ts';
import {
  CopyIntegrityError,
  objectIn,
  refuseReplacing,
  replicateObject,
  SourceChangedError,
  TargetConflictError,
} from '../lib/s3-copy.ts';
import { defineTask, lambdaHandler } from '../lib/task.ts';
import { verifyCopy } from '../lib/verify-copy.ts';
import { readStoredPlan } from './cursors.ts';
import { expectations, headIngest, type IngestObject } from './ingest-objects.ts';
import type { CopyBatch, CopyBatchInput, CopyBatchOutput, LargeObject } from './types.ts';
import { type BundleCandidate, bundleChunks, checkPresentMember, writeWalBundle } from './wal-bundle-copy.ts';

/** Failed keys named in the output (the count is always exact): keeps the payload small. */
const MAX_FAILED_KEYS = 5;

/**
 * The Map's items: the hot path's small batches of several clusters packed into one invocation of
 * up to `batchSize` objects (100 hosts with 10 new segments each are 5 invocations, not 100).
 */
export function packBatches(batches: readonly CopyBatch[], batchSize: number): (CopyBatch | CopyBatch[])[] {
  const items: (CopyBatch | CopyBatch[])[] = [];
  let pack: CopyBatch[] = [];
  let count = 0;
  const flush = () => {
    if (pack.length > 0) items.push(pack.length === 1 ? (pack[0] as CopyBatch) : pack);
    pack = [];
    count = 0;
  };
  for (const batch of batches) {
    if (!batch.keys || batch.count >= batchSize) items.push(batch);
    else {
      if (count + batch.count > batchSize) flush();
      pack.push(batch);
      count += batch.count;
    }
  }
  flush();
  return items;
}

/**
 * Copies one batch, or the small batches of several clusters one after another (the hot path packs
 * a few new objects of many clusters into one invocation, so a run has few Map iterations). The
 * totals add up; the clusters with a failure are named, so only they keep their cursors.
 */
export async function copyBatch(
  input: CopyBatchInput,
  env: PipelineEnv,
  locations: LocationFactory,
): Promise<CopyBatchOutput> {
  if ('stored' in input.batch) {
    // A plan passed by reference: this item is one of its batches (the plan is checked to be this target's).
    const { stored, index } = input.batch;
    const plan = await readStoredPlan(await locations.ingest(), input.target, stored);
    const batch = plan.batches[index];
    if (batch === undefined)
      throw new Error(
        `stored plan ${stored} has no batch ${index} (it has ${plan.batches.length}); the state machine passes the indexes of the plan's batches`,
      );
    return copyBatch({ ...input, batch }, env, locations);
  }
  if (!Array.isArray(input.batch)) return copyClusterBatch({ ...input, batch: input.batch }, env, locations);
  const results: CopyBatchOutput[] = [];
  for (const batch of input.batch) results.push(await copyClusterBatch({ ...input, batch }, env, locations));
  const sum = (f: (r: CopyBatchOutput) => number) => results.reduce((n, r) => n + f(r), 0);
  const oldestFailed = results
    .map((r) => r.oldestFailed)
    .filter((t): t is string => t !== undefined)
    .sort()[0];
  return {
    copied: sum((r) => r.copied),
    skipped: sum((r) => r.skipped),
    failed: sum((r) => r.failed),
    bytes: sum((r) => r.bytes),
    failedKeys: results.flatMap((r) => r.failedKeys).slice(0, MAX_FAILED_KEYS),
    tampered: sum((r) => r.tampered),
    large: results.flatMap((r) => r.large),
    failedClusters: results.filter((r) => r.failed > 0).map((r) => r.cluster as string),
    waitingClusters: results.flatMap((r) => r.waitingClusters ?? []),
    ...(oldestFailed ? { oldestFailed } : {}),
  };
}

async function copyClusterBatch(
  input: CopyBatchInput & { readonly batch: CopyBatch },
  env: PipelineEnv,
  locations: LocationFactory,
): Promise<CopyBatchOutput> {
  const { batch } = input;
  const verify = input.verify === true;
  if (!env.clusters.includes(batch.cluster)) throw new Error(`unknown cluster "${batch.cluster}" in batch`);
  const prefix = clusterPrefix(batch.cluster);
  if (
    !batch.firstKey.startsWith(prefix) ||
    !batch.lastKey.startsWith(prefix) ||
    batch.firstKey > batch.lastKey
  )
    throw new Error(`batch range ${batch.firstKey} .. ${batch.lastKey} is not inside ${prefix}`);
  if (batch.listing && batch.listing.sizes.length !== batch.keys?.length)
    throw new Error(
      `batch of ${batch.cluster} has ${batch.listing.sizes.length} listed sizes for ${batch.keys?.length ?? 0} keys; the planner gives one size (or null) per key it names`,
    );
  const tuning = copyTuning(env);
  const runtimeTarget = findTarget(env, input.target);
  const target = await locations.target(runtimeTarget);
  const ingest = await locations.ingest();
  const expectedOf = expectations(ingest, batch.cluster);
  // A target with WAL bundles is read through the one bundle reader: a member counts as present.
  const bundles = runtimeTarget.walBundles === true ? withWalBundles(target.storage) : undefined;

  // The range's first key is listed on its own: StartAfter is exclusive.
  async function* range(location: Location) {
    const storage = location === target && bundles ? bundles : location.storage;
    const first = await storage.head(batch.firstKey);
    if (first) yield first;
    if (storage === location.storage) yield* listFrom(location, prefix, batch.firstKey, batch.lastKey);
    else
      for await (const object of storage.list(prefix, { startAfter: batch.firstKey })) {
        if (object.key > batch.lastKey) return;
        yield object;
      }
  }
  // At a bundled target, a named segment the proposed cursor does not pass is not settled: a later
  // run bundles it, and until then it costs no request at all.
  const bundling = bundles && batch.keys && batch.bundleThrough ? batch.bundleThrough : undefined;
  const waits = (key: string) => {
    const wal = bundling && isBundleableWalKey(key) ? walNameOfKey(key) : undefined;
    const through = wal && bundling?.[wal.timeline];
    return wal !== undefined && (through === undefined || key > through);
  };
  let waiting = 0;
  // A settled segment whose size the plan's listing gave goes into the bundle without a HEAD: the
  // GET that reads it checks its length and the provider's checksum (./wal-bundle-copy.ts).
  const oldestListed = batch.listing ? new Date(batch.listing.oldest) : undefined;
  const listedSize = (i: number) => (bundling ? (batch.listing?.sizes[i] ?? undefined) : undefined);
  async function* named(keys: readonly string[]): AsyncIterable<IngestObject> {
    for (const [i, key] of keys.entries()) {
      if (!key.startsWith(prefix)) throw new Error(`batch key ${key} is not inside ${prefix}`);
      if (waits(key)) {
        logDecision('left for a later bundle', { cluster: batch.cluster, key });
        waiting += 1;
        continue;
      }
      const sizeBytes = listedSize(i);
      if (sizeBytes !== undefined && oldestListed && isBundleableWalKey(key)) {
        // A failed bundle is dated by the oldest segment listed: its lag shows a little more, never less.
        yield { key, sizeBytes, lastModified: oldestListed, listed: true };
        continue;
      }
      // Otherwise (a plan made without sizes, or a key not listed) one HEAD gives the size and the
      // provider's checksum (expectations needs no second one).
      // A 404 is asked again through the driver, which tells a missing bucket (thrown) from a
      // missing key.
      const object =
        (await headIngest(objectIn(ingest.storage, key), key)) ?? (await ingest.storage.head(key));
      if (object) yield object;
    }
  }
  // Named keys: each is checked at the target as it is copied (a verified copy is skipped). A
  // verify run looks at every object of the range; otherwise only at those missing (or of another size).
  const objects = batch.keys
    ? named(batch.keys)
    : verify
      ? range(ingest)
      : missingAt(range(ingest), range(target));
  const out = {
    copied: 0,
    skipped: 0,
    failed: 0,
    bytes: 0,
    failedKeys: [] as string[],
    tampered: 0,
    oldestFailed: undefined as string | undefined,
    large: [] as LargeObject[],
  };
  const failedCopy = (error: unknown, key: string, lastModified: Date, objects = 1) => {
    const conflict = error instanceof TargetConflictError;
    if (!(conflict || error instanceof CopyIntegrityError || error instanceof SourceChangedError))
      throw error;
    if (conflict) out.tampered += 1;
    out.failed += objects;
    logDecision(conflict ? 'kept tampered copy' : 'copy failed its check', {
      cluster: batch.cluster,
      key,
      reason: (error as Error).message,
    });
    if (out.failedKeys.length < MAX_FAILED_KEYS) out.failedKeys.push(key);
    const time = lastModified.toISOString();
    if (out.oldestFailed === undefined || time < out.oldestFailed) out.oldestFailed = time;
  };
  const toBundle = new Map<string, BundleCandidate[]>();
  for await (const object of objects) {
    if (backupIdOfManifestKey(object.key) !== undefined) continue;
    const source = objectIn(ingest.storage, object.key);
    const copy = objectIn(target.storage, object.key);
    try {
      if (parseWalBundleKey(object.key))
        throw new TargetConflictError(
          object.key,
          `ingest holds ${object.key}, a WAL bundle key: only the pipeline writes bundles, and only at targets, so the host wrote it; it is not copied: remove it from ingest and find out who wrote it`,
        );
      // A listed size is checked by the GET that reads the bytes into the bundle (its only use).
      const expected =
        'listed' in object && object.listed
          ? { sizeBytes: object.sizeBytes }
          : await expectedOf(object, verify);
      const wal = bundles && isBundleableWalKey(object.key) ? walNameOfKey(object.key) : undefined;
      if (bundles && wal) {
        if (bundling) {
          toBundle.set(wal.timeline, [...(toBundle.get(wal.timeline) ?? []), { object, expected }]);
          continue;
        }
        if ((await checkPresentMember(bundles, object.key, expected)) === 'skipped') {
          logDecision('skipped', { cluster: batch.cluster, key: object.key, sizeBytes: object.sizeBytes });
          out.skipped += 1;
          continue;
        }
      }
      if (object.sizeBytes > tuning.largeObjectBytes) {
        const before = await verifyCopy(copy, expected);
        refuseReplacing(copy, before);
        const decided = before.status === 'ok' ? 'skipped' : 'large copy planned';
        logDecision(decided, { cluster: batch.cluster, key: object.key, sizeBytes: object.sizeBytes });
        if (before.status === 'ok') out.skipped += 1;
        else
          out.large.push({
            key: object.key,
            sizeBytes: object.sizeBytes,
            ...(expected.sha256 ? { sha256: expected.sha256 } : {}),
            lastModified: object.lastModified.toISOString(),
          });
        continue;
      }
      const result = await replicateObject(source, copy, expected, {
        partSizeBytes: tuning.copyPartBytes,
        createOnly: target.conditionalWrites === true,
        // Only a target listing proves a key absent. Named keys get a HEAD first: the hot path
        // names unsettled segments again, and a HEAD is far cheaper than a refused PUT.
        listedAbsent: 'absent' in object && object.absent,
      });
      logDecision(result.action, { cluster: batch.cluster, key: object.key, sizeBytes: object.sizeBytes });
      if (result.action === 'skipped') out.skipped += 1;
      else {
        out.copied += 1;
        out.bytes += result.copy.sizeBytes;
      }
    } catch (error) {
      failedCopy(error, object.key, object.lastModified);
    }
  }
  for (const candidates of toBundle.values())
    for (const chunk of bundleChunks(candidates)) {
      const firstMember = (chunk[0] as BundleCandidate).object;
      try {
        const written = await writeWalBundle(
          ingest,
          target,
          bundles as WalBundleStorage,
          batch.cluster,
          chunk,
        );
        logDecision(written.existed ? 'bundle found' : 'bundled', {
          cluster: batch.cluster,
          key: written.key,
          members: written.members,
          sizeBytes: written.bytes,
        });
        if (written.existed) out.skipped += chunk.length;
        else {
          out.copied += chunk.length;
          out.bytes += written.bytes;
        }
      } catch (error) {
        failedCopy(
          error,
          (error as { key?: string }).key ?? firstMember.key,
          firstMember.lastModified,
          chunk.length,
        );
      }
    }
  const { oldestFailed, ...rest } = out;
  return {
    ...rest,
    cluster: batch.cluster,
    ...(oldestFailed ? { oldestFailed } : {}),
    ...(waiting > 0 ? { waitingClusters: [batch.cluster] } : {}),
  };
}

export const copyBatchTask = defineTask({
  id: 'replication/copy-batch',
  run: (input, { env, locations }) => copyBatch(input, env, locations),
});

export const handler = lambdaHandler(copyBatchTask);
