import { Duration } from 'aws-cdk-lib';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { MAX_PRUNE_ROUNDS } from '../../lambdas/retention/types.ts';
import { PipelineFunction } from './pipeline-function.ts';
import type { PipelineTargets } from './pipeline-targets.ts';
import { alertStep, CATCH_ALL, lambdaStep, pipelineStateMachine } from './steps.ts';

export interface RetentionProps {
  readonly stateMachineName: string;
  /** Ingest and the targets: only the delete step may delete, and learn the delete-capable keys. */
  readonly targets: PipelineTargets;
  readonly alertTopic: sns.ITopic;
  /**
   * Ingest's window in days: after the targets, the run prunes ingest of what is older and every
   * target is done with (lambdas/retention/plan-ingest-prune.ts). @default - ingest is never pruned
   * (no pruning states, and no role that may delete in ingest)
   */
  readonly ingestKeepDays?: number;
}

/**
 * Retention: for each target, plan from its manifests what the target's policy keeps (the pure
 * planner in core/retention-planner.ts decides; the plan never drops WAL a kept backup needs, nor
 * the newest verified backup), then delete the rest in explicit batches. Objects still under Object
 * Lock are skipped and reported, not treated as failures.
 *
 * With `ingestKeepDays`, the run then prunes ingest: one plan over every cluster (it needs every
 * target's holdings at once, so it cannot be a branch of the per-target Map) and the same batch
 * shape, order and per-run limit as the targets' deletions, with its own delete function, the only
 * role that may delete in ingest.
 */
export class Retention extends Construct {
  readonly stateMachine: sfn.StateMachine;
  readonly functions: PipelineFunction[];

  constructor(scope: Construct, id: string, props: RetentionProps) {
    super(scope, id);
    const environment = props.targets.environment({ deleteCredentials: true });
    const plan = new PipelineFunction(this, 'PlanRetention', {
      handler: 'retention/plan-retention',
      description: 'pgkeep retention: plan what a target keeps from its manifests and policy',
      timeout: Duration.minutes(10),
      memorySizeMiB: 1024,
      environment,
    });
    const prune = new PipelineFunction(this, 'DeleteBatch', {
      handler: 'retention/delete-batch',
      description: 'pgkeep retention: delete one batch of expired objects from a target',
      timeout: Duration.minutes(10),
      memorySizeMiB: 512,
      environment,
    });
    this.functions = [plan, prune];
    // The planner asks each planned deletion for its Object Lock retention, so a locked object is
    // skipped, not attempted; the delete-capable provider keys go to the delete step alone.
    props.targets.grantRead(plan, { objectLockState: true });
    props.targets.grantDelete(prune);

    const alert = alertStep(
      this,
      'Alert retention failure',
      props.alertTopic,
      'pgkeep: retention on a target failed',
      sfn.TaskInput.fromText(
        sfn.JsonPath.format(
          'Retention on target {} failed: {}',
          sfn.JsonPath.stringAt('$.target'),
          sfn.JsonPath.stringAt('$.error.Cause'),
        ),
      ),
    );
    const targetFailed = new sfn.Pass(this, 'Retention failed on target', {
      parameters: { 'target.$': '$.target', status: 'failed', 'error.$': '$.error' },
    });
    alert.addCatch(targetFailed, { errors: ['States.ALL'], resultPath: '$.alertError' });
    alert.next(targetFailed);

    const planStep = lambdaStep(this, 'Plan retention for target', plan.function, {
      payload: { 'target.$': '$.target', 'execution.$': '$.execution' },
      resultPath: '$.plan',
      timeout: Duration.minutes(11),
    }).addCatch(alert, CATCH_ALL);
    const deleteBatch = lambdaStep(this, 'Delete expired batch', prune.function, {
      payload: { 'target.$': '$.target', 'batch.$': '$.batch' },
      timeout: Duration.minutes(11),
    });
    deleteBatch.addCatch(
      new sfn.Fail(this, 'Batch delete failed', { causePath: '$.error.Cause', errorPath: '$.error.Error' }),
      CATCH_ALL,
    );
    const deleteBatches = new sfn.Map(this, 'Delete expired objects', {
      itemsPath: '$.plan.deleteBatches',
      itemSelector: { 'target.$': '$.target', 'batch.$': '$$.Map.Item.Value' },
      // One at a time: the planner orders deletions (a manifest before its objects).
      maxConcurrency: 1,
      resultSelector: { 'deleted.$': '$[*].deleted', 'locked.$': '$[*].locked' },
      resultPath: '$.deleted',
    });
    deleteBatches.itemProcessor(deleteBatch);
    deleteBatches.addCatch(alert, CATCH_ALL);
    const anyDeletes = new sfn.Choice(this, 'Anything expired?');
    const targetDone = new sfn.Pass(this, 'Retention applied on target', {
      parameters: {
        'target.$': '$.target',
        status: 'ok',
        'dryRun.$': '$.plan.dryRun',
        'kept.$': '$.plan.keptBackups',
        'expired.$': '$.plan.expiredBackups',
        'deleted.$': '$.plan.deletions',
        'locked.$': '$.plan.locked',
        'more.$': '$.plan.more',
        'rejected.$': '$.plan.rejected',
      },
    });
    anyDeletes
      .when(sfn.Condition.isPresent('$.plan.deleteBatches[0]'), deleteBatches.next(targetDone))
      .otherwise(targetDone);

    const perTarget = new sfn.Map(this, 'Apply retention on each target', {
      itemsPath: '$.targets',
      // The execution input: `{"dryRun": true}` plans and reports without deleting.
      itemSelector: { 'target.$': '$$.Map.Item.Value', 'execution.$': '$.input' },
      maxConcurrency: 2,
      resultSelector: { 'targets.$': '$', 'statuses.$': '$[*].status' },
      resultPath: '$.results',
    });
    perTarget.itemProcessor(planStep.next(anyDeletes));

    const summarize = new sfn.Pass(this, 'Summarize retention', {
      parameters: {
        'targets.$': '$.results.targets',
        'anyFailed.$': "States.ArrayContains($.results.statuses, 'failed')",
        // Ingest pruning goes over the clusters and reads `{"dryRun": true}` from the input.
        ...(props.ingestKeepDays === undefined ? {} : { 'clusters.$': '$.clusters', 'input.$': '$.input' }),
      },
    });
    const verdict = new sfn.Choice(this, 'Retention applied everywhere?')
      .when(
        sfn.Condition.booleanEquals('$.anyFailed', true),
        new sfn.Fail(this, 'Retention failed for a target', {
          error: 'RetentionFailed',
          cause: 'at least one target failed; each failure raised its own alert',
        }),
      )
      .otherwise(new sfn.Succeed(this, 'Retention complete'));

    const start = new sfn.Pass(this, 'Load retention targets', {
      parameters: {
        targets: props.targets.names,
        ...(props.ingestKeepDays === undefined ? {} : { clusters: props.targets.clusterNames }),
        'input.$': '$',
      },
    });
    const afterTargets =
      props.ingestKeepDays === undefined
        ? summarize.next(verdict)
        : summarize.next(this.pruneIngest(props, props.ingestKeepDays, verdict));
    const anyTargets = new sfn.Choice(this, 'Any retention targets?')
      .when(sfn.Condition.isPresent('$.targets[0]'), perTarget.next(afterTargets))
      .otherwise(new sfn.Succeed(this, 'No targets to prune'));

    this.stateMachine = pipelineStateMachine(this, 'StateMachine', {
      stateMachineName: props.stateMachineName,
      comment: "pgkeep: apply each target's retention policy, never dropping what a kept backup needs",
      definition: start.next(anyTargets),
      invokes: this.functions.map((f) => f.function),
      timeout: Duration.hours(3),
    });
  }

  /** Plan ingest pruning, then delete its batches one at a time; "Ingest pruned" goes on to `then`. */
  private pruneIngest(props: RetentionProps, keepDays: number, then: sfn.IChainable): sfn.IChainable {
    const plan = new PipelineFunction(this, 'PlanIngestPrune', {
      handler: 'retention/plan-ingest-prune',
      description: 'pgkeep retention: plan what ingest may let go of (old, and at every target)',
      timeout: Duration.minutes(10),
      memorySizeMiB: 1024,
      environment: props.targets.environment({ ingestKeepDays: keepDays }),
    });
    const prune = new PipelineFunction(this, 'DeleteIngestBatch', {
      handler: 'retention/delete-batch',
      description: 'pgkeep retention: delete one batch of pruned objects from ingest',
      timeout: Duration.minutes(10),
      memorySizeMiB: 512,
      environment: props.targets.environment(),
    });
    (this.functions as PipelineFunction[]).push(plan, prune);
    props.targets.grantRead(plan);
    props.targets.grantIngestDelete(prune);

    const failed = new sfn.Fail(this, 'Ingest pruning failed', {
      error: 'IngestPruningFailed',
      causePath: '$.error.Cause',
    });
    const alert = alertStep(
      this,
      'Alert ingest pruning failure',
      props.alertTopic,
      'pgkeep: pruning the ingest bucket failed',
      sfn.TaskInput.fromText(
        sfn.JsonPath.format('Pruning the ingest bucket failed: {}', sfn.JsonPath.stringAt('$.error.Cause')),
      ),
    );
    alert.addCatch(failed, { errors: ['States.ALL'], resultPath: '$.alertError' });
    alert.next(failed);

    const planStep = lambdaStep(this, 'Plan ingest pruning', plan.function, {
      payload: { 'cluster.$': '$.cluster', 'round.$': '$.round', 'execution.$': '$.execution' },
      resultPath: '$.prune',
      timeout: Duration.minutes(11),
    });
    // A failure fails this cluster's iteration, and so the Map, which alerts.
    planStep.addCatch(
      new sfn.Fail(this, 'Ingest pruning plan failed', {
        causePath: '$.error.Cause',
        errorPath: '$.error.Error',
      }),
      CATCH_ALL,
    );
    const deleteBatch = lambdaStep(this, 'Delete pruned ingest batch', prune.function, {
      payload: { 'target.$': '$.target', 'batch.$': '$.batch' },
      timeout: Duration.minutes(11),
    });
    deleteBatch.addCatch(
      new sfn.Fail(this, 'Ingest batch delete failed', {
        causePath: '$.error.Cause',
        errorPath: '$.error.Error',
      }),
      CATCH_ALL,
    );
    const deleteBatches = new sfn.Map(this, 'Prune ingest', {
      itemsPath: '$.prune.deleteBatches',
      itemSelector: { 'target.$': '$.prune.target', 'batch.$': '$$.Map.Item.Value' },
      // One at a time: a backup's objects go before its manifest, backups before WAL.
      maxConcurrency: 1,
      resultSelector: { 'deleted.$': '$[*].deleted' },
      resultPath: '$.pruned',
    });
    deleteBatches.itemProcessor(deleteBatch);
    // Counts only, so the Map's result stays small with many clusters; each round's keys and
    // reasons are in the output of its "Plan ingest pruning" state and in the decision log.
    const clusterDone = new sfn.Pass(this, 'Cluster pruned', {
      parameters: {
        'cluster.$': '$.prune.cluster',
        'dryRun.$': '$.prune.dryRun',
        'rounds.$': '$.prune.round',
        'deleted.$': '$.prune.deletions.count',
        'backups.$': '$.prune.backupsPruned',
        'wal.$': '$.prune.walPruned',
        'more.$': '$.prune.more',
        'kept.$': '$.prune.kept',
        'rejected.$': '$.prune.rejected.count',
      },
    });
    // A round cut at the per-round limit is planned again (not in a dry run, which deletes nothing).
    const nextRound = new sfn.Pass(this, 'Next pruning round', {
      parameters: { 'cluster.$': '$.cluster', 'round.$': '$.prune.round', 'execution.$': '$.execution' },
    });
    const again = new sfn.Choice(this, 'More to prune in the cluster?')
      .when(
        sfn.Condition.and(
          sfn.Condition.booleanEquals('$.prune.more', true),
          sfn.Condition.booleanEquals('$.prune.dryRun', false),
          sfn.Condition.numberLessThan('$.prune.round', MAX_PRUNE_ROUNDS),
        ),
        nextRound.next(planStep),
      )
      .otherwise(clusterDone);
    const any = new sfn.Choice(this, 'Anything to prune from ingest?')
      .when(sfn.Condition.isPresent('$.prune.deleteBatches[0]'), deleteBatches.next(again))
      .otherwise(again);
    const perCluster = new sfn.Map(this, 'Prune ingest of each cluster', {
      itemsPath: '$.clusters',
      itemSelector: { 'cluster.$': '$$.Map.Item.Value', round: 0, 'execution.$': '$.input' },
      maxConcurrency: 2,
      resultPath: '$.pruned',
    });
    perCluster.itemProcessor(planStep.next(any));
    perCluster.addCatch(alert, CATCH_ALL);
    const done = new sfn.Pass(this, 'Ingest pruned', {
      parameters: { 'targets.$': '$.targets', 'anyFailed.$': '$.anyFailed', 'ingest.$': '$.pruned' },
    });
    done.next(then);
    return perCluster.next(done);
  }
}
