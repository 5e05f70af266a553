/**
 * "Delete expired batch": deletes the planned keys from one target, in order. A key the provider
 * refuses because of Object Lock is reported and left; any other failure stops the batch (the
 * planner's order matters: a manifest goes before its objects).
 *
 * "Delete pruned ingest batch" runs the same code with the target `ingest` (the name no target may
 * take), so ingest pruning goes through the same guard; it is another function, whose role may
 * delete in ingest and nowhere else (cdk/constructs/retention.ts).
 */
import { clusterPrefix } from '../../core/keys.ts';
import { assertObjectKey } from '../../storage/object-keys.ts';
import type { LocationFactory } from '../lib/locations.ts';
import { logDecision } from '../lib/log.ts';
import { findTarget, INGEST_LOCATION, type PipelineEnv } from '../lib/pipeline-env.ts';
import { defineTask, lambdaHandler } from '../lib/task.ts';
import type { DeleteBatchInput, DeleteBatchOutput } from './types.ts';

/**
 * S3 refuses to delete a locked object version with 403 AccessDenied and a message naming Object
 * Lock; any other access denial is a permission problem and must fail the batch, not be skipped.
 */
export function isObjectLockRefusal(error: unknown): boolean {
  const messages: string[] = [];
  for (let e = error as { message?: string; cause?: unknown } | undefined; e; e = e.cause as typeof e)
    if (typeof e.message === 'string') messages.push(e.message);
  return messages.some((m) => /object lock|object is protected|retention|legal hold/i.test(m));
}

export async function deleteBatch(
  input: DeleteBatchInput,
  env: PipelineEnv,
  locations: LocationFactory,
): Promise<DeleteBatchOutput> {
  const { cluster } = input.batch;
  if (!env.clusters.includes(cluster))
    throw new Error(
      `refusing to delete: unknown cluster "${cluster}" in the batch; known clusters: ${env.clusters.join(', ')}`,
    );
  const prefix = clusterPrefix(cluster);
  // Every key is checked before the first delete, so a bad batch deletes nothing at all.
  // A ".." segment would pass the prefix test and land elsewhere: the key rules come first.
  for (const key of input.batch.keys) {
    assertObjectKey(key);
    if (!key.startsWith(prefix))
      throw new Error(
        `refusing to delete ${key}: the batch was planned for cluster "${cluster}" and the key is not under ${prefix}; nothing was deleted`,
      );
  }
  const target =
    input.target === INGEST_LOCATION
      ? await locations.ingest()
      : await locations.target(findTarget(env, input.target), 'delete');
  let deleted = 0;
  const locked: string[] = [];
  for (const key of input.batch.keys) {
    try {
      await target.storage.delete(key);
      deleted += 1;
      logDecision('deleted', { cluster, key });
    } catch (error) {
      if (!isObjectLockRefusal(error)) throw error;
      locked.push(key);
      logDecision('kept locked object', { cluster, key, reason: 'Object Lock refused the delete' });
    }
  }
  return { deleted, locked };
}

export const deleteBatchTask = defineTask({
  id: 'retention/delete-batch',
  run: (input, { env, locations }) => deleteBatch(input, env, locations),
});

export const handler = lambdaHandler(deleteBatchTask);
