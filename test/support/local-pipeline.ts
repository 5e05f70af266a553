/**
 * The real Lambda handler modules bound to the synthesized state machines' tasks, for running the
 * pipeline on this machine (tests and `npm run demo`): each handler gets the pipeline's settings and
 * a LocationFactory pointing at local S3-compatible servers instead of reading them from Lambda's
 * environment. One place, so a new task in a definition needs one new binding, not one per caller.
 */
import type { RetentionPolicy } from '../../core/retention-planner.ts';
import type { LocationFactory } from '../../lambdas/lib/locations.ts';
import type { PipelineEnv } from '../../lambdas/lib/pipeline-env.ts';
import { copyBatch } from '../../lambdas/replication/copy-batch.ts';
import { copyLarge } from '../../lambdas/replication/copy-large.ts';
import { copyManifests } from '../../lambdas/replication/copy-manifests.ts';
import { planStep } from '../../lambdas/replication/plan-copies.ts';
import { deleteBatch } from '../../lambdas/retention/delete-batch.ts';
import { planTargetRetention } from '../../lambdas/retention/plan-retention.ts';
import type { TaskBindings } from './state-machines.ts';

/**
 * The replication machine's tasks; SNS alerts are collected in `alerts`. `policies` are the
 * targets' retention policies (what they drop is never copied); none by default.
 */
export function replicationBindings(
  env: PipelineEnv,
  locations: LocationFactory,
  alerts: unknown[],
  policies: Record<string, RetentionPolicy> = {},
): TaskBindings {
  return {
    lambdas: {
      'replication/plan-copies': (input) => planStep(input, env, locations, policies),
      'replication/copy-batch': (input) => copyBatch(input as never, env, locations),
      'replication/copy-manifests': (input) => copyManifests(input as never, env, locations),
      'replication/copy-large': (input) => copyLarge(input as never, env, locations),
    },
    states: { 'Alert replication failure': (input) => alerts.push(input) },
  };
}

export interface RetentionBindingOptions {
  readonly now?: Date;
  /** Stands in for Object Lock where the local server has none. */
  readonly lockOf?: Parameters<typeof planTargetRetention>[5];
  /** Sees every delete batch before it runs. */
  readonly onDelete?: (input: unknown) => void;
}

/** The retention machine's tasks with `policies` by target name; SNS alerts are collected in `alerts`. */
export function retentionBindings(
  env: PipelineEnv,
  locations: LocationFactory,
  policies: Record<string, RetentionPolicy>,
  alerts: unknown[],
  options: RetentionBindingOptions = {},
): TaskBindings {
  return {
    lambdas: {
      'retention/plan-retention': (input) =>
        planTargetRetention(
          input as never,
          env,
          locations,
          policies,
          options.now ?? new Date(),
          options.lockOf,
        ),
      'retention/delete-batch': (input) => {
        options.onDelete?.(input);
        return deleteBatch(input as never, env, locations);
      },
    },
    states: { 'Alert retention failure': (input) => alerts.push(input) },
  };
}

/**
 * The pipeline's settings for a run on local servers: the example config's two targets (dr-aws and
 * b2, as the synthesized machines name them) in the given buckets, with batches and parts small
 * enough that a test's few objects exercise every path.
 */
export function localPipelineEnv(
  clusters: readonly string[],
  buckets: { readonly drAws: string; readonly b2: string },
): PipelineEnv {
  return {
    ingestBucket: 'ingest',
    ingestRegion: 'us-east-1',
    clusters: [...clusters],
    targets: [
      { name: 'dr-aws', type: 'aws-s3', bucket: buckets.drAws, region: 'us-east-1', prefix: '' },
      { name: 'b2', type: 'aws-s3', bucket: buckets.b2, region: 'us-east-1', prefix: '' },
    ],
    batchSize: 60,
    maxBatchesPerRun: 40,
    metricNamespace: 'pgkeep',
    largeObjectBytes: 64 * 1024 * 1024,
    copyPartBytes: 5 * 1024 * 1024,
    partsPerInvocation: 2,
  };
}
