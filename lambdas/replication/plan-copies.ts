/**
 * "List objects missing on target": compares ingest with one target, cluster by cluster, and
 * returns what to copy as key-range batches (manifests separately, to be copied last).
 */
import { backupIdOfManifestKey, clusterPrefix } from '../../core/keys.ts';
import { lambdaDefaults } from '../lib/defaults.ts';
import { parseInput } from '../lib/input.ts';
import { type LocationFactory, listFrom, mapTransient, missingAt } from '../lib/locations.ts';
import { findTarget, type PipelineEnv } from '../lib/pipeline-env.ts';
import {
  type CopyBatch,
  type PlanCopiesInput,
  PlanCopiesInputSchema,
  type PlanCopiesOutput,
} from './types.ts';

/** Manifests per run: each is copied with a handful of HEADs, so a few hundred fit one invocation. */
const MAX_MANIFESTS_PER_RUN = 200;

export async function planCopies(
  input: PlanCopiesInput,
  env: PipelineEnv,
  locations: LocationFactory,
): Promise<PlanCopiesOutput> {
  const target = await locations.target(findTarget(env, input.target));
  const ingest = await locations.ingest();
  const batches: CopyBatch[] = [];
  const manifestKeys: string[] = [];
  let objectCount = 0;
  let more = false;
  clusters: for (const cluster of env.clusters) {
    const prefix = clusterPrefix(cluster);
    let current: { firstKey: string; lastKey: string; count: number } | undefined;
    for await (const object of missingAt(listFrom(ingest, prefix), listFrom(target, prefix))) {
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
  return { target: input.target, batches, manifestKeys, objectCount, more };
}

export async function handler(input: PlanCopiesInput): Promise<PlanCopiesOutput> {
  const { env, locations } = lambdaDefaults();
  return mapTransient(() =>
    planCopies(parseInput(PlanCopiesInputSchema, input, 'replication/plan-copies'), env, locations),
  );
}
