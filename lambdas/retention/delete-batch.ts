/**
 * "Delete expired batch": deletes the planned keys from one target, in order. A key the provider
 * refuses because of Object Lock is reported and left; any other failure stops the batch (the
 * planner's order matters: a manifest goes before its objects).
 */
import { lambdaDefaults } from '../lib/defaults.ts';
import { type LocationFactory, mapTransient } from '../lib/locations.ts';
import { findTarget, type PipelineEnv } from '../lib/pipeline-env.ts';
import type { DeleteBatchInput, DeleteBatchOutput } from './types.ts';

function isObjectLockRefusal(error: unknown): boolean {
  const e = error as { name?: string; message?: string; cause?: { name?: string; Code?: string } };
  return (
    e?.name === 'AccessDeniedError' ||
    e?.cause?.name === 'AccessDenied' ||
    e?.cause?.Code === 'AccessDenied' ||
    /object lock|retention|legal hold/i.test(e?.message ?? '')
  );
}

export async function deleteBatch(
  input: DeleteBatchInput,
  env: PipelineEnv,
  locations: LocationFactory,
): Promise<DeleteBatchOutput> {
  const target = await locations.target(findTarget(env, input.target));
  let deleted = 0;
  const locked: string[] = [];
  for (const key of input.batch.keys) {
    if (!env.clusters.some((cluster) => key.startsWith(`v1/${cluster}/`)))
      throw new Error(`refusing to delete ${key}: not under a configured cluster's prefix`);
    try {
      await target.storage.delete(key);
      deleted += 1;
    } catch (error) {
      if (!isObjectLockRefusal(error)) throw error;
      locked.push(key);
    }
  }
  return { deleted, locked };
}

export async function handler(input: DeleteBatchInput): Promise<DeleteBatchOutput> {
  const { env, locations } = lambdaDefaults();
  return mapTransient(() => deleteBatch(input, env, locations));
}
