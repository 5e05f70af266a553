/**
 * "Copy batch to target": makes sure the target holds a verified copy of every object of one key
 * range (manifests excepted: they go last, through "Copy and verify manifests").
 *
 * Each object goes through {@link replicateObject} (lambdas/lib/s3-copy.ts): a copy already at the
 * target and verified is skipped; anything else is streamed from ranged GETs into a PutObject or a
 * multipart upload (memory bounded by the part size, whatever the object size), hashed on the way
 * and read back at the target. What a copy must match:
 *
 * - a backup object: the size and sha256 of the ciphertext its manifest records (read from ingest;
 *   an object whose manifest is not written yet is checked as below);
 * - WAL and anything else without a manifest: the size ingest lists and the sha256 of the bytes
 *   read from ingest while copying (or the provider's full-object SHA-256 checksum when ingest has
 *   one); in a `verify` run, the sha256 of the ingest object is computed first, so a copy corrupted
 *   at the target is found even when its size is right.
 *
 * Objects above the large-object threshold are not copied here: they are returned in `large` for
 * the "Copy large objects" fan-out, where part ranges are spread over several invocations so no
 * one Lambda needs more than its 15 minutes.
 *
 * A copy that fails its check (or whose source changed under it) is counted in `failed` and the
 * batch goes on; the next run copies it again. A copy already at the target with other bytes is
 * never replaced (the source changed after it was copied: a host overwrote its object, or the copy
 * was damaged): it is kept, counted in `failed` and `tampered`, and the run alerts. A storage error stops the batch (the state machine
 * retries it, then fails the target's branch with an alert).
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { GetObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import { backupIdOfManifestKey, clusterPrefix, isBackupId, manifestKey } from '../../core/keys.ts';
import type { ValidatedManifest } from '../../core/manifest.ts';
import { isStoredManifest, readManifestOrReject } from '../../storage/manifests.ts';
import type { ObjectInfo } from '../../storage/storage.ts';
import { type Location, type LocationFactory, listFrom, missingAt } from '../lib/locations.ts';
import { logDecision } from '../lib/log.ts';
import { copyTuning, findTarget, type PipelineEnv } from '../lib/pipeline-env.ts';
import {
  CopyIntegrityError,
  objectIn,
  refuseReplacing,
  replicateObject,
  type S3ObjectRef,
  SourceChangedError,
  TargetConflictError,
} from '../lib/s3-copy.ts';
import { defineTask, lambdaHandler } from '../lib/task.ts';
import { type ExpectedObject, verifyCopy } from '../lib/verify-copy.ts';
import type { CopyBatchInput, CopyBatchOutput, LargeObject } from './types.ts';

/** Failed keys named in the output (the count is always exact): keeps the payload small. */
const MAX_FAILED_KEYS = 5;

/** The backup id in a backup object's key (`…/base/<id>/…`, `…/logical/<db>/<id>/…`), if any. */
export function backupIdOfObjectKey(key: string): string | undefined {
  const m = /\/(?:base|logical\/[^/]+)\/([^/]+)\//.exec(key);
  return m?.[1] && isBackupId(m[1]) ? m[1] : undefined;
}

/** sha256 (hex) of an object, streamed: memory does not grow with its size. */
export async function sha256Of(object: S3ObjectRef): Promise<string> {
  const out = await object.client.send(new GetObjectCommand({ Bucket: object.bucket, Key: object.key }));
  const hash = createHash('sha256');
  await pipeline(out.Body as Readable, async (source: AsyncIterable<Buffer>) => {
    for await (const chunk of source) hash.update(chunk);
  });
  return hash.digest('hex');
}

/** The provider's full-object SHA-256 (hex) of an object, when it computed one. */
async function providerSha256(object: S3ObjectRef): Promise<string | undefined> {
  const head = await object.client.send(
    new HeadObjectCommand({ Bucket: object.bucket, Key: object.key, ChecksumMode: 'ENABLED' }),
  );
  if (!head.ChecksumSHA256 || head.ChecksumType === 'COMPOSITE') return undefined;
  return Buffer.from(head.ChecksumSHA256, 'base64').toString('hex');
}

/** Finds what each object must match: the manifest's entry for backup objects (manifests read once each). */
export function expectations(ingest: Location, cluster: string) {
  const manifests = new Map<string, Promise<ValidatedManifest | undefined>>();
  const manifestOf = (backupId: string) => {
    let manifest = manifests.get(backupId);
    if (!manifest) {
      const key = manifestKey(cluster, backupId);
      // A manifest not written yet, or rejected as untrustworthy, vouches for nothing: the object
      // is then checked like WAL (and the rejection is reported by "Copy and verify manifests").
      manifest = (async () => {
        if (!(await ingest.storage.head(key))) return undefined;
        const read = await readManifestOrReject(ingest.storage, key);
        return isStoredManifest(read) ? read.manifest : undefined;
      })();
      manifests.set(backupId, manifest);
    }
    return manifest;
  };
  return async (object: ObjectInfo, verify: boolean): Promise<ExpectedObject> => {
    const backupId = backupIdOfObjectKey(object.key);
    const entry = backupId
      ? (await manifestOf(backupId))?.objects.find((o) => o.key === object.key)
      : undefined;
    if (entry) {
      if (entry.sizeBytes !== object.sizeBytes)
        throw new SourceChangedError(
          `ingest ${object.key} has ${object.sizeBytes} bytes, its manifest says ${entry.sizeBytes}`,
        );
      return { sizeBytes: entry.sizeBytes, sha256: entry.sha256 };
    }
    const source = objectIn(ingest.storage, object.key);
    const provider = await providerSha256(source);
    if (provider) return { sizeBytes: object.sizeBytes, sha256: provider };
    // Without `verify`, the copy is checked against the sha256 of the bytes it streamed.
    return verify
      ? { sizeBytes: object.sizeBytes, sha256: await sha256Of(source) }
      : { sizeBytes: object.sizeBytes };
  };
}

export async function copyBatch(
  input: CopyBatchInput,
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
  const tuning = copyTuning(env);
  const target = await locations.target(findTarget(env, input.target));
  const ingest = await locations.ingest();
  const expectedOf = expectations(ingest, batch.cluster);

  // The range's first key is listed on its own: StartAfter is exclusive.
  async function* range(location: Location) {
    const first = await location.storage.head(batch.firstKey);
    if (first) yield first;
    yield* listFrom(location, prefix, batch.firstKey, batch.lastKey);
  }
  async function* named(keys: readonly string[]) {
    for (const key of keys) {
      if (!key.startsWith(prefix)) throw new Error(`batch key ${key} is not inside ${prefix}`);
      const object = await ingest.storage.head(key);
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
  for await (const object of objects) {
    if (backupIdOfManifestKey(object.key) !== undefined) continue;
    const source = objectIn(ingest.storage, object.key);
    const copy = objectIn(target.storage, object.key);
    try {
      const expected = await expectedOf(object, verify);
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
      const result = await replicateObject(source, copy, expected, { partSizeBytes: tuning.copyPartBytes });
      logDecision(result.action, { cluster: batch.cluster, key: object.key, sizeBytes: object.sizeBytes });
      if (result.action === 'skipped') out.skipped += 1;
      else {
        out.copied += 1;
        out.bytes += result.copy.sizeBytes;
      }
    } catch (error) {
      const conflict = error instanceof TargetConflictError;
      if (!(conflict || error instanceof CopyIntegrityError || error instanceof SourceChangedError))
        throw error;
      if (conflict) out.tampered += 1;
      out.failed += 1;
      logDecision(conflict ? 'kept tampered copy' : 'copy failed its check', {
        cluster: batch.cluster,
        key: object.key,
        reason: (error as Error).message,
      });
      if (out.failedKeys.length < MAX_FAILED_KEYS) out.failedKeys.push(object.key);
      const time = object.lastModified.toISOString();
      if (out.oldestFailed === undefined || time < out.oldestFailed) out.oldestFailed = time;
    }
  }
  const { oldestFailed, ...rest } = out;
  return { ...rest, cluster: batch.cluster, ...(oldestFailed ? { oldestFailed } : {}) };
}

export const copyBatchTask = defineTask({
  id: 'replication/copy-batch',
  run: (input, { env, locations }) => copyBatch(input, env, locations),
});

export const handler = lambdaHandler(copyBatchTask);
