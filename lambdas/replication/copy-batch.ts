/**
 * "Copy batch to target": copies the objects of one key range that the target lacks, each as a
 * stream (ingest GET piped into a multipart upload, so memory is bounded by the part size), then
 * checks the copy's size at the target.
 *
 * Limit (finished in the replication issue with lambdas/lib/s3-copy.ts): one object must copy within
 * the Lambda's 15 minutes; huge base backups need ranged copies spread over several invocations.
 */

import { backupIdOfManifestKey, clusterPrefix } from '../../core/keys.ts';
import { lambdaDefaults } from '../lib/defaults.ts';
import { parseInput } from '../lib/input.ts';
import { type Location, type LocationFactory, listFrom, mapTransient, missingAt } from '../lib/locations.ts';
import { findTarget, type PipelineEnv } from '../lib/pipeline-env.ts';
import { type CopyBatchInput, CopyBatchInputSchema, type CopyBatchOutput } from './types.ts';

/** A copy arrived with another size than its source: never silently accepted. */
export class CopyMismatchError extends Error {
  override name = 'CopyMismatchError';
}

/** Copies `key` from `source` to `destination` and checks the size landed. */
export async function copyObject(
  source: Location,
  destination: Location,
  key: string,
  sizeBytes: number,
): Promise<void> {
  await destination.storage.put(key, await source.storage.get(key));
  const copy = await destination.storage.head(key);
  if (copy?.sizeBytes !== sizeBytes)
    throw new CopyMismatchError(
      `copy of ${key} at ${destination.name} has ${copy?.sizeBytes ?? 'no'} bytes, ingest has ${sizeBytes}; the next run copies it again`,
    );
}

export async function copyBatch(
  input: CopyBatchInput,
  env: PipelineEnv,
  locations: LocationFactory,
): Promise<CopyBatchOutput> {
  const { batch } = input;
  if (!env.clusters.includes(batch.cluster)) throw new Error(`unknown cluster "${batch.cluster}" in batch`);
  const prefix = clusterPrefix(batch.cluster);
  if (
    !batch.firstKey.startsWith(prefix) ||
    !batch.lastKey.startsWith(prefix) ||
    batch.firstKey > batch.lastKey
  )
    throw new Error(`batch range ${batch.firstKey} .. ${batch.lastKey} is not inside ${prefix}`);
  const target = await locations.target(findTarget(env, input.target));
  const ingest = await locations.ingest();

  // The range's first key is listed on its own: StartAfter is exclusive.
  async function* range(location: Location) {
    const first = await location.storage.head(batch.firstKey);
    if (first) yield first;
    yield* listFrom(location, prefix, batch.firstKey, batch.lastKey);
  }
  let copied = 0;
  let bytes = 0;
  for await (const object of missingAt(range(ingest), range(target))) {
    // Manifests go last, through "Copy and verify manifests".
    if (backupIdOfManifestKey(object.key) !== undefined) continue;
    await copyObject(ingest, target, object.key, object.sizeBytes);
    copied += 1;
    bytes += object.sizeBytes;
  }
  return { copied, bytes, skipped: Math.max(0, batch.count - copied) };
}

export async function handler(input: CopyBatchInput): Promise<CopyBatchOutput> {
  const { env, locations } = lambdaDefaults();
  return mapTransient(() =>
    copyBatch(parseInput(CopyBatchInputSchema, input, 'replication/copy-batch'), env, locations),
  );
}
