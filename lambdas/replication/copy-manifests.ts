/**
 * "Copy and verify manifests": a manifest at a target means the backup exists there, so it is
 * copied only after every object it lists is at the target with the size the manifest records.
 * A manifest whose objects are not all there yet waits for a later run.
 *
 * Verification here is by size; checking each copy's sha256 against the manifest needs a full read
 * and comes with the streaming copy of the replication issue (lambdas/lib/s3-copy.ts).
 */
import { text } from 'node:stream/consumers';
import { parseManifest } from '../../core/manifest.ts';
import { lambdaDefaults } from '../lib/defaults.ts';
import { parseInput } from '../lib/input.ts';
import { type LocationFactory, mapTransient } from '../lib/locations.ts';
import { findTarget, type PipelineEnv } from '../lib/pipeline-env.ts';
import { copyObject } from './copy-batch.ts';
import { type CopyManifestsInput, CopyManifestsInputSchema, type CopyManifestsOutput } from './types.ts';

export async function copyManifests(
  input: CopyManifestsInput,
  env: PipelineEnv,
  locations: LocationFactory,
): Promise<CopyManifestsOutput> {
  const target = await locations.target(findTarget(env, input.target));
  const ingest = await locations.ingest();
  let copied = 0;
  const waiting: CopyManifestsOutput['waiting'] = [];
  for (const key of input.manifestKeys) {
    const source = await ingest.storage.head(key);
    if (!source) throw new Error(`manifest ${key} is listed for copying but is not in ingest`);
    const manifest = parseManifest(await text(await ingest.storage.get(key)), `ingest:${key}`);
    let missingObjects = 0;
    for (const object of manifest.objects) {
      const copy = await target.storage.head(object.key);
      if (copy?.sizeBytes !== object.sizeBytes) missingObjects += 1;
    }
    if (missingObjects > 0) {
      waiting.push({ key, missingObjects });
      continue;
    }
    await copyObject(ingest, target, key, source.sizeBytes);
    copied += 1;
  }
  return { copied, waiting };
}

export async function handler(input: CopyManifestsInput): Promise<CopyManifestsOutput> {
  const { env, locations } = lambdaDefaults();
  return mapTransient(() =>
    copyManifests(parseInput(CopyManifestsInputSchema, input, 'replication/copy-manifests'), env, locations),
  );
}
