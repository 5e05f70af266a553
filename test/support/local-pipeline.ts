/**
 * The real Lambda handler modules bound to the synthesized state machines' tasks, for running the
 * pipeline on this machine (tests and `npm run demo`): each handler gets the pipeline's settings and
 * a LocationFactory pointing at local S3-compatible servers instead of reading them from Lambda's
 * environment. One place, so a new task in a definition needs one new binding, not one per caller.
 */
import type { RetentionPolicy } from '../../core/retention-planner.ts';
import type { LocationFactory } from '../../lambdas/lib/locations.ts';
import type { PipelineEnv, RuntimeTarget } from '../../lambdas/lib/pipeline-env.ts';
import { invokeTask, type TaskDeps } from '../../lambdas/lib/task.ts';
import { HANDLER_IDS, type HandlerId } from '../../lambdas/registry.ts';
import { TASKS } from '../../lambdas/tasks.ts';
import {
  type Execution,
  FAKE_ACCOUNT,
  FAKE_REGION,
  type LocalHandler,
  runStateMachine,
  type SynthesizedStateMachine,
  type TaskBindings,
} from './state-machines.ts';

/**
 * The registered task `id` run as the deployed handler runs it (its input parsed), with `deps`.
 * The decision log is dropped unless `deps.logWrite` takes it: test output stays readable.
 */
export function localTask(id: HandlerId, deps: TaskDeps): LocalHandler {
  const task = TASKS[id];
  const quiet: TaskDeps = { logWrite: () => {}, ...deps };
  return (input) => invokeTask(task as Parameters<typeof invokeTask>[0], input, quiet);
}

/** Every registered task of one state machine (`replication/…`), bound with `deps`. */
export function localTasks(
  capability: 'replication' | 'retention' | 'verification',
  deps: TaskDeps,
): Partial<Record<HandlerId, LocalHandler>> {
  return Object.fromEntries(
    HANDLER_IDS.filter((id) => id.startsWith(`${capability}/`)).map((id) => [id, localTask(id, deps)]),
  );
}

/**
 * The replication machine's tasks; SNS alerts are collected in `alerts`. `policies` are the
 * targets' retention policies (what they drop is never copied); none by default.
 */
export function replicationBindings(
  env: PipelineEnv,
  locations: LocationFactory,
  alerts: unknown[],
  policies: Record<string, RetentionPolicy> = {},
  options: { readonly logWrite?: TaskDeps['logWrite'] } = {},
): TaskBindings {
  const { logWrite } = options;
  return {
    lambdas: localTasks('replication', { env, locations, policies, ...(logWrite ? { logWrite } : {}) }),
    states: { 'Alert replication failure': (input) => alerts.push(input) },
  };
}

/** A Standard run the Express front started: the input it was given and the run, not waited for. */
export interface StartedRun {
  readonly input: unknown;
  readonly run: Promise<Execution>;
}

/**
 * The Express front of manifest runs (`replicationManifestRuns`): its first step bound as in
 * `standardBindings`, and "Start a standard run" (`states:startExecution`, not `.sync`) starting a
 * run of the synthesized Standard machine with those bindings and returning at once, as AWS does;
 * each run is added to `started`. Starting any other machine fails as AWS would.
 */
export function manifestRunsBindings(
  standard: SynthesizedStateMachine,
  standardBindings: TaskBindings,
  started: StartedRun[],
): TaskBindings {
  return {
    lambdas: { 'replication/plan-copies': standardBindings.lambdas?.['replication/plan-copies'] },
    states: {
      'Start a standard run': (request) => {
        const { StateMachineArn, Input } = request as { StateMachineArn: string; Input: unknown };
        if (StateMachineArn !== standard.arn)
          throw Object.assign(new Error(`State Machine Does Not Exist: '${StateMachineArn}'`), {
            name: 'StepFunctions.StateMachineDoesNotExistException',
          });
        const run = runStateMachine(standard, standardBindings, Input);
        // Awaited by whoever reads `started`; a failed run is not an unhandled rejection meanwhile.
        run.catch(() => {});
        started.push({ input: Input, run });
        const name = `local-started-${started.length}`;
        return {
          ExecutionArn: `arn:aws:states:${FAKE_REGION}:${FAKE_ACCOUNT}:execution:${standard.logicalId}:${name}`,
          StartDate: new Date().toISOString(),
        };
      },
    },
  };
}

export interface RetentionBindingOptions {
  readonly now?: Date;
  /** Stands in for Object Lock where the local server has none. */
  readonly lockOf?: TaskDeps['lockOf'];
  /** Sees every delete batch before it runs. */
  readonly onDelete?: (input: unknown) => void;
  /** Where the decision log goes. @default stdout */
  readonly logWrite?: TaskDeps['logWrite'];
}

/** The retention machine's tasks with `policies` by target name; SNS alerts are collected in `alerts`. */
export function retentionBindings(
  env: PipelineEnv,
  locations: LocationFactory,
  policies: Record<string, RetentionPolicy>,
  alerts: unknown[],
  options: RetentionBindingOptions = {},
): TaskBindings {
  const { now, lockOf, onDelete, logWrite } = options;
  const deps: TaskDeps = {
    env,
    locations,
    policies,
    ...(now ? { now: () => now } : {}),
    ...(lockOf ? { lockOf } : {}),
    ...(logWrite ? { logWrite } : {}),
  };
  const deleteBatch = localTask('retention/delete-batch', deps);
  return {
    lambdas: {
      ...localTasks('retention', deps),
      'retention/delete-batch': (input) => {
        onDelete?.(input);
        return deleteBatch(input);
      },
    },
    states: {
      'Alert retention failure': (input) => alerts.push(input),
      'Alert ingest pruning failure': (input) => alerts.push(input),
    },
  };
}

/**
 * The example config's S3-compatible target "b2" on a local server (bucket `offsite`), its key in a
 * Secrets Manager secret as in a deployment: the production location factory reads it.
 */
export function providerTarget(
  endpoint: string,
  credentialsSecretArn = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:pgkeep/targets/b2-AbCdEf',
): RuntimeTarget {
  return {
    name: 'b2',
    type: 's3-compatible',
    endpoint,
    bucket: 'offsite',
    region: 'us-east-1',
    forcePathStyle: true,
    prefix: '',
    credentialsSecretArn,
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
