import { Duration } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { PIPELINE_PREFIX } from '../../core/keys.ts';
import { manifestRunsStateMachineName } from '../../core/pipeline-names.ts';
import { EMPTY_SUMMARY, TARGET_RECORD_FIELDS } from '../../lambdas/replication/types.ts';
import { CURSOR_ACTIONS } from '../iam-actions.ts';
import { acknowledgeWildcardResources } from '../nag.ts';
import { ManifestRuns } from './manifest-runs.ts';
import { PipelineFunction } from './pipeline-function.ts';
import type { PipelineTargets } from './pipeline-targets.ts';
import { alertStep, CATCH_ALL, lambdaStep, pipelineStateMachine, planEveryTargetStep } from './steps.ts';

export interface ReplicationProps {
  readonly stateMachineName: string;
  /** Ingest and the targets: the functions read the one and write the others. */
  readonly targets: PipelineTargets;
  readonly alertTopic: sns.ITopic;
}

/**
 * Replication: one first step plans every target and copies small plans itself, so a quiet run
 * ends there (docs/architecture.md, "Replication at scale"). What is left goes, for each target (a
 * Map, so targets run side by side and one target down fails only its own branch and raises its
 * own alert), list what ingest has and the target lacks, copy it in
 * explicit batches (a Map over batches the planner returns), then copy each manifest last, only
 * after every object it lists is at the target. Idempotent: a re-run copies only what is missing.
 */
export class Replication extends Construct {
  readonly stateMachine: sfn.StateMachine;
  /** The Standard machine's functions. */
  readonly functions: PipelineFunction[];
  /** The Express machine that runs replication started by a manifest, and its own plan function. */
  readonly manifestRuns: ManifestRuns;

  constructor(scope: Construct, id: string, props: ReplicationProps) {
    super(scope, id);
    const environment = props.targets.environment();
    const plan = new PipelineFunction(this, 'PlanCopies', {
      handler: 'replication/plan-copies',
      description: 'pgkeep replication: list objects in ingest that a target lacks, in batches',
      timeout: Duration.minutes(5),
      memorySizeMiB: 512,
      environment,
    });
    const copy = new PipelineFunction(this, 'CopyBatch', {
      handler: 'replication/copy-batch',
      description: 'pgkeep replication: copy one batch of objects from ingest to a target, streaming',
      timeout: Duration.minutes(15),
      // Above this, a copy waits on the network more and more, so 1,024 MB is only a little faster
      // and bills nearly twice as much; its peak memory fits under Lambda's own heap limits for
      // this size (`npm run bench lambda-duration`; the figures are in docs/costs.md, "Lambda").
      memorySizeMiB: 512,
      environment,
    });
    const manifests = new PipelineFunction(this, 'CopyManifests', {
      handler: 'replication/copy-manifests',
      description: 'pgkeep replication: copy manifests last, once every object they list is at the target',
      timeout: Duration.minutes(5),
      memorySizeMiB: 512,
      environment,
    });
    const large = new PipelineFunction(this, 'CopyLarge', {
      handler: 'replication/copy-large',
      description: 'pgkeep replication: one step of a large object copy spread over invocations',
      timeout: Duration.minutes(15),
      memorySizeMiB: 1024,
      environment,
    });
    this.functions = [plan, copy, manifests, large];
    for (const fn of this.functions) props.targets.grantWrite(fn);
    // A plan too large to pass between states is stored there; each batch copy reads its batch from it.
    const storedPlans = props.targets.bucket.arnForObjects(`${PIPELINE_PREFIX}replication/*/plans/*`);
    copy.role.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: ['s3:GetObject'], resources: [storedPlans] }),
    );
    acknowledgeWildcardResources(
      copy,
      'each batch copy reads its batch of a stored replication plan',
      storedPlans,
    );
    // The cursors: the pipeline's own state in ingest, under a prefix no host may write.
    const cursorObjects = props.targets.bucket.arnForObjects(`${PIPELINE_PREFIX}replication/*`);
    const mayKeepCursors = (fn: PipelineFunction) => {
      fn.role.addToPrincipalPolicy(
        new iam.PolicyStatement({ actions: [...CURSOR_ACTIONS], resources: [cursorObjects] }),
      );
      acknowledgeWildcardResources(
        fn,
        'replication keeps one cursor object per target (and short-lived proposals) under pipeline/replication/',
        cursorObjects,
      );
    };
    for (const fn of [plan, manifests]) mayKeepCursors(fn);

    const targetNames = props.targets.names;
    const alert = alertStep(
      this,
      'Alert replication failure',
      props.alertTopic,
      'pgkeep: replication to a target failed',
      sfn.TaskInput.fromText(
        sfn.JsonPath.format(
          'Replication to target {} failed: {}',
          sfn.JsonPath.stringAt('$.target'),
          sfn.JsonPath.stringAt('$.error.Cause'),
        ),
      ),
    );
    const targetFailed = new sfn.Pass(this, 'Target failed', {
      parameters: {
        'target.$': '$.target',
        status: 'failed',
        'error.$': '$.error',
        'summary.$': '$.manifests.summary',
      },
    });
    alert.addCatch(targetFailed, { errors: ['States.ALL'], resultPath: '$.alertError' });
    alert.next(targetFailed);

    const listMissing = lambdaStep(this, 'List objects missing on target', plan.function, {
      payload: { 'target.$': '$.target', 'execution.$': '$.execution', 'summary.$': '$.manifests.summary' },
      resultPath: '$.plan',
      timeout: Duration.minutes(6),
    }).addCatch(alert, CATCH_ALL);

    // One large object: start the multipart upload, copy its part ranges side by side (each batch
    // of parts one invocation), complete and verify; on failure abort the upload.
    const largeCopyFailed = new sfn.Fail(this, 'Large copy failed', {
      causePath: '$.error.Cause',
      errorPath: '$.error.Error',
    });
    const startLarge = lambdaStep(this, 'Start large copy', large.function, {
      payload: { step: 'start', 'target.$': '$.target', 'object.$': '$.object' },
      resultPath: '$.start',
      timeout: Duration.minutes(16),
    }).addCatch(largeCopyFailed, CATCH_ALL);
    const abortLarge = lambdaStep(this, 'Abort large copy', large.function, {
      payload: {
        step: 'abort',
        'target.$': '$.target',
        'object.$': '$.object',
        'copy.$': '$.start.copy',
      },
      resultPath: '$.abort',
      timeout: Duration.minutes(16),
    });
    abortLarge.addCatch(largeCopyFailed, { errors: ['States.ALL'], resultPath: '$.abortError' });
    abortLarge.next(largeCopyFailed);
    const copyPartRange = lambdaStep(this, 'Copy part range', large.function, {
      payload: {
        step: 'parts',
        'target.$': '$.target',
        'object.$': '$.object',
        'copy.$': '$.copy',
        'partNumbers.$': '$.partNumbers',
      },
      timeout: Duration.minutes(16),
    }).addCatch(
      new sfn.Fail(this, 'Part range failed', { causePath: '$.error.Cause', errorPath: '$.error.Error' }),
      CATCH_ALL,
    );
    const copyPartRanges = new sfn.Map(this, 'Copy part ranges', {
      itemsPath: '$.start.partNumberBatches',
      itemSelector: {
        'target.$': '$.target',
        'object.$': '$.object',
        'copy.$': '$.start.copy',
        'partNumbers.$': '$$.Map.Item.Value',
      },
      maxConcurrency: 4,
      resultPath: '$.parts',
    });
    copyPartRanges.itemProcessor(copyPartRange);
    copyPartRanges.addCatch(abortLarge, CATCH_ALL);
    const completeLarge = lambdaStep(this, 'Complete large copy', large.function, {
      payload: {
        step: 'complete',
        'target.$': '$.target',
        'object.$': '$.object',
        'copy.$': '$.start.copy',
        'parts.$': '$.parts',
      },
      timeout: Duration.minutes(16),
    }).addCatch(abortLarge, CATCH_ALL);
    const copyLargeObjects = new sfn.Map(this, 'Copy large objects', {
      itemsPath: '$.round.large',
      itemSelector: { 'target.$': '$.target', 'object.$': '$$.Map.Item.Value' },
      // As many side by side as when each batch copied its own (4 batches at a time, one object each).
      maxConcurrency: 4,
      resultPath: '$.round.largeCopies',
    });
    copyLargeObjects.itemProcessor(startLarge.next(copyPartRanges).next(completeLarge));
    // A large copy that failed fails this target's round, as a failed batch does: alert, no manifests.
    copyLargeObjects.addCatch(alert, CATCH_ALL);

    // Each batch invocation is one state (Step Functions bills every state entered): the item is the
    // copy task alone, its output the batch's result.
    const copyBatch = lambdaStep(this, 'Copy batch to target', copy.function, {
      payload: { 'target.$': '$.target', 'batch.$': '$.batch', 'verify.$': '$.verify' },
      timeout: Duration.minutes(16),
    });
    // A failed batch fails the batch Map, whose Catch alerts for this target; the next run resumes.
    copyBatch.addCatch(
      new sfn.Fail(this, 'Batch copy failed', { causePath: '$.error.Cause', errorPath: '$.error.Error' }),
      CATCH_ALL,
    );
    const copyBatches = new sfn.Map(this, 'Copy batches to target', {
      itemsPath: '$.plan.batches',
      itemSelector: { 'target.$': '$.target', 'batch.$': '$$.Map.Item.Value', 'verify.$': '$.plan.verify' },
      maxConcurrency: 4,
      // Large objects are found by the text of the results, not by `$[*].large[*]`: that path
      // matches nothing in a round without any, which aws-local-stepfunctions fails on (AWS gives
      // []), and a round may have no batch at all (only manifests left).
      resultSelector: {
        'batches.$': '$',
        'text.$': 'States.JsonToString($)',
        largeCopies: [],
      },
      resultPath: '$.round',
    });
    copyBatches.itemProcessor(copyBatch);
    copyBatches.addCatch(alert, CATCH_ALL);
    // Only here, with at least one large object among the results, does the flat list match something.
    const collectLarge = new sfn.Pass(this, 'Collect large objects', {
      parameters: { 'batches.$': '$.round.batches', 'large.$': '$.round.batches[*].large[*]' },
      resultPath: '$.round',
    });

    const copyManifests = lambdaStep(this, 'Copy and verify manifests', manifests.function, {
      payload: {
        'target.$': '$.target',
        'manifestKeys.$': '$.plan.manifestKeys',
        'batches.$': '$.round.batches',
        'largeCopies.$': '$.round.largeCopies',
        'plan.$': '$.plan',
        'summary.$': '$.manifests.summary',
        'cursors.$': '$.plan.pendingCursors',
        // A plan passed by reference: the manifest keys are read from it, and it is deleted after.
        'stored.$': '$.plan.stored',
      },
      resultPath: '$.manifests',
      timeout: Duration.minutes(6),
    }).addCatch(alert, CATCH_ALL);

    // What the console shows per target: objects copied / skipped (already verified) / failed, bytes, lag.
    const targetRecord = (summary: string) => ({
      'target.$': '$.target',
      status: 'ok',
      ...Object.fromEntries(TARGET_RECORD_FIELDS.map((field) => [`${field}.$`, `${summary}.${field}`])),
    });
    const targetDone = new sfn.Pass(this, 'Target replicated', {
      parameters: targetRecord('$.manifests.summary'),
    });
    const targetDoneByPlan = new sfn.Pass(this, 'Target replicated by the plan', {
      parameters: targetRecord('$.plan.manifests.summary'),
    });
    // A copy that failed its check is not a silent success: the target fails and alerts.
    const objectsFailed = new sfn.Pass(this, 'Objects failed their check', {
      parameters: {
        Error: 'CopyIntegrityError',
        'Cause.$':
          "States.Format('{} objects failed their size or sha256 check and will be copied again by the next run; of them {} are trust violations (a target copy with other bytes than ingest, kept and never replaced, or a manifest rejected as untrustworthy); first: {}', $.manifests.summary.objectsFailed, $.manifests.summary.trustViolations, States.JsonToString($.manifests.summary.failedKeys))",
      },
      resultPath: '$.error',
    });
    objectsFailed.next(alert);
    const anyFailed = new sfn.Choice(this, 'Any object failed?')
      .when(sfn.Condition.numberGreaterThan('$.manifests.summary.objectsFailed', 0), objectsFailed)
      .otherwise(targetDone);

    const perTarget = new sfn.Map(this, 'Replicate to each target', {
      itemsPath: '$.targets',
      itemSelector: {
        'target.$': '$$.Map.Item.Value.target',
        // The first step's plan of this target, or none (null, {}): then the target is planned here.
        'plan.$': '$$.Map.Item.Value.plan',
        // The execution input: `{"verify": true}` makes a verify run, `{"reconcile": true}` a full comparison.
        'execution.$': '$.execution',
        manifests: {
          summary: EMPTY_SUMMARY,
        },
      },
      maxConcurrency: 4,
      resultSelector: { 'targets.$': '$', 'statuses.$': '$[*].status' },
      resultPath: '$.results',
    });
    // A plan cut at the per-run limit is continued in the same execution until the target is caught up.
    const more = new sfn.Choice(this, 'More to copy?')
      .when(sfn.Condition.booleanEquals('$.plan.more', true), listMissing)
      .otherwise(anyFailed);
    // A small plan was copied by the plan step itself, but an object failed its check: alert.
    const copiedByPlan = new sfn.Pass(this, 'Copied by the plan', {
      inputPath: '$.plan.manifests',
      resultPath: '$.manifests',
    }).next(anyFailed);
    const planDone = new sfn.Choice(this, 'Copied by the plan?')
      .when(sfn.Condition.not(sfn.Condition.isPresent('$.plan.done')), listMissing)
      .when(
        sfn.Condition.and(
          sfn.Condition.booleanEquals('$.plan.done', true),
          sfn.Condition.numberEquals('$.plan.manifests.summary.objectsFailed', 0),
        ),
        targetDoneByPlan,
      )
      .when(sfn.Condition.booleanEquals('$.plan.done', true), copiedByPlan)
      .otherwise(copyBatches);
    // One Choice per round, not per batch: the large objects of all its batches, if any, are copied
    // before the manifests. The text holds `"large":[{` only where a result lists a large object: a
    // quote in a key is escaped (aws-local-stepfunctions drops the backslash, so only there could
    // a key holding that text send a round here, where its empty flat list fails the run).
    copyBatches.next(
      new sfn.Choice(this, 'Large objects to copy?')
        .when(
          sfn.Condition.stringMatches('$.round.text', '*"large":[{*'),
          collectLarge.next(copyLargeObjects).next(copyManifests),
        )
        .otherwise(copyManifests),
    );
    copyManifests.next(more);
    listMissing.next(planDone);
    perTarget.itemProcessor(planDone);

    const summarize = new sfn.Pass(this, 'Summarize targets', {
      parameters: {
        'targets.$': '$.results.targets',
        'anyFailed.$': "States.ArrayContains($.results.statuses, 'failed')",
      },
    });
    const verdict = new sfn.Choice(this, 'All targets replicated?')
      .when(
        sfn.Condition.booleanEquals('$.anyFailed', true),
        new sfn.Fail(this, 'Replication failed for a target', {
          error: 'ReplicationFailed',
          cause:
            'at least one target failed; each failure raised its own alert, the other targets were replicated',
        }),
      )
      .otherwise(new sfn.Succeed(this, 'Replication complete'));
    perTarget.next(summarize).next(verdict);

    // Every run starts with one invocation planning all targets, which copies small plans itself
    // (lambdas/replication/plan-targets.ts): a quiet run ends after three states entered. What is
    // left goes to the per-target Map, which alerts per target.
    const planAll = planEveryTargetStep(this, plan.function, targetNames, { timeout: Duration.minutes(6) });
    // If the step itself fails (a timeout), every target is planned by the Map, as one would be.
    planAll.addCatch(
      new sfn.Pass(this, 'Plan each target separately', {
        parameters: {
          'execution.$': '$',
          // No plan (CDK drops a null here): the Map plans each target.
          targets: targetNames.map((target) => ({ target, plan: {} })),
        },
      }).next(perTarget),
      { errors: ['States.ALL'], resultPath: sfn.JsonPath.DISCARD },
    );
    const anyLeft = new sfn.Choice(this, 'Anything left to copy?')
      .when(sfn.Condition.booleanEquals('$.anyLeft', true), perTarget)
      .otherwise(new sfn.Succeed(this, 'Replicated by the first step', { outputPath: '$.result' }));

    this.stateMachine = pipelineStateMachine(this, 'StateMachine', {
      stateMachineName: props.stateMachineName,
      comment: 'pgkeep: copy every new object in ingest to every target, manifests last',
      // The targets are known at synth time: without any, a run has nothing to do.
      definition:
        targetNames.length > 0 ? planAll.next(anyLeft) : new sfn.Succeed(this, 'No targets to replicate to'),
      invokes: this.functions.map((f) => f.function),
      timeout: Duration.hours(2),
    });

    // Runs started by a manifest: an Express front that hands what is left to this machine.
    this.manifestRuns = new ManifestRuns(this, 'ManifestRuns', {
      stateMachineName: manifestRunsStateMachineName(props.stateMachineName),
      environment,
      targetNames,
      standard: this.stateMachine,
    });
    props.targets.grantWrite(this.manifestRuns.plan);
    mayKeepCursors(this.manifestRuns.plan);
  }
}
