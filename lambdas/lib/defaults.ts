/**
 * What a handler uses when it runs in Lambda: the environment read once per cold start and the
 * bucket factory built from it. Tests call the exported work functions with their own instead.
 */
import { awsLocations, type LocationFactory } from './locations.ts';
import { type PipelineEnv, readPipelineEnv } from './pipeline-env.ts';

let cached: { env: PipelineEnv; locations: LocationFactory } | undefined;

export function lambdaDefaults(): { env: PipelineEnv; locations: LocationFactory } {
  if (!cached) {
    const env = readPipelineEnv();
    cached = { env, locations: awsLocations(env) };
  }
  return cached;
}
