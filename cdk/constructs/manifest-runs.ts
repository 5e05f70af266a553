import { Duration } from 'aws-cdk-lib';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';
import { stateMachineLogGroupName } from '../../core/pipeline-names.ts';
import { PipelineFunction } from './pipeline-function.ts';
import { pipelineStateMachine, planEveryTargetStep } from './steps.ts';

/** An Express execution still running at 5 minutes is stopped (a Step Functions quota), wherever it is. */
const EXPRESS_RUN_LIMIT = Duration.minutes(5);

/**
 * The front's own plan function may run 3 minutes, where the Standard machine's may run 5 (a
 * reconcile run lists ingest and every target in full): a manifest run lists one cluster and copies
 * at most 256 MiB per target itself, seconds in practice. A separate function, because a step's
 * timeout alone would leave a function that ran on past it copying beside the Standard run.
 */
const PLAN_TIMEOUT = Duration.minutes(3);
/** Slightly above the function's own timeout, so the function's error is what gets reported. */
const PLAN_STEP_TIMEOUT = Duration.seconds(PLAN_TIMEOUT.toSeconds() + 10);
const HAND_OFF_TIMEOUT = Duration.seconds(20);
const HAND_OFF_RETRY = { interval: Duration.seconds(2), maxAttempts: 2, backoffRate: 2 };
/** Left for the transitions and for invoking the function (its timeout counts from its start). */
const MARGIN = Duration.seconds(30);

/**
 * The longest an Express run can take: the first step (no retries: its Catch hands off, and the
 * Standard run retries) and the hand-off with every retry used.
 */
export function worstCaseRunSeconds(): number {
  const waits = Array.from(
    { length: HAND_OFF_RETRY.maxAttempts },
    (_, i) => HAND_OFF_RETRY.interval.toSeconds() * HAND_OFF_RETRY.backoffRate ** i,
  );
  const handOff =
    HAND_OFF_TIMEOUT.toSeconds() * (1 + HAND_OFF_RETRY.maxAttempts) + waits.reduce((a, b) => a + b, 0);
  return PLAN_STEP_TIMEOUT.toSeconds() + handOff;
}

export interface ManifestRunsProps {
  readonly stateMachineName: string;
  /** What the plan function reads (the same as the Standard machine's). */
  readonly environment: Record<string, string>;
  readonly targetNames: readonly string[];
  /** The Standard replication machine: started with the run's own input when anything is left. */
  readonly standard: sfn.IStateMachine;
}

/**
 * The Express front of runs started by a manifest (docs/architecture.md, "Replication at scale"):
 * the Standard machine's first step, then a Choice. Most manifest runs end there, billed per
 * request and duration instead of per state entered. A run with anything left (a large backup), or
 * whose first step failed, starts the Standard machine with the same input (not `.sync`, which
 * Express cannot wait for), which plans again from scratch as a scheduled run does: planning is
 * idempotent and copies are create-only, so what the first step already copied is found present.
 */
export class ManifestRuns extends Construct {
  readonly stateMachine: sfn.StateMachine;
  /** The first step's function; the caller grants it what the Standard plan function may do. */
  readonly plan: PipelineFunction;
  /** Where its executions are seen: Step Functions keeps no history of Express executions. */
  readonly logGroupName: string;

  constructor(scope: Construct, id: string, props: ManifestRunsProps) {
    super(scope, id);
    if (worstCaseRunSeconds() + MARGIN.toSeconds() > EXPRESS_RUN_LIMIT.toSeconds())
      throw new Error(
        `the manifest runs' steps may take ${worstCaseRunSeconds()} s, above the ${EXPRESS_RUN_LIMIT.toSeconds()} s of an Express run less ${MARGIN.toSeconds()} s: shorten the plan timeout`,
      );
    this.plan = new PipelineFunction(this, 'PlanCopies', {
      handler: 'replication/plan-copies',
      description: 'pgkeep replication: the first step of a run started by a manifest (an Express run)',
      timeout: PLAN_TIMEOUT,
      memorySizeMiB: 512,
      environment: props.environment,
    });
    const planAll = planEveryTargetStep(this, this.plan.function, props.targetNames, {
      timeout: PLAN_STEP_TIMEOUT,
      retry: false,
    });
    const handOff = new tasks.StepFunctionsStartExecution(this, 'Start a standard run', {
      stateMachine: props.standard,
      integrationPattern: sfn.IntegrationPattern.REQUEST_RESPONSE,
      // The run's original input ({"trigger": "manifest", "key": …}): the Standard run plans that cluster.
      input: sfn.TaskInput.fromJsonPathAt('$$.Execution.Input'),
      resultSelector: { 'executionArn.$': '$.ExecutionArn' },
      resultPath: '$.standardRun',
      taskTimeout: sfn.Timeout.duration(HAND_OFF_TIMEOUT),
    });
    handOff.addRetry({ errors: ['States.ALL'], ...HAND_OFF_RETRY });
    // Not started: the run fails, which the replication alarm counts; the next scheduled run copies it.
    handOff.addCatch(
      new sfn.Fail(this, 'Standard run not started', {
        causePath: '$.error.Cause',
        errorPath: '$.error.Error',
      }),
      { errors: ['States.ALL'], resultPath: '$.error' },
    );
    handOff.next(new sfn.Succeed(this, 'Handed off to a standard run'));
    // A timeout or an error: the Standard run plans every target again, with its retries and alerts.
    planAll.addCatch(handOff, { errors: ['States.ALL'], resultPath: '$.firstStepError' });
    const anyLeft = new sfn.Choice(this, 'Anything left to copy?')
      .when(sfn.Condition.booleanEquals('$.anyLeft', true), handOff)
      .otherwise(new sfn.Succeed(this, 'Replicated by the first step', { outputPath: '$.result' }));

    this.logGroupName = stateMachineLogGroupName(props.stateMachineName);
    this.stateMachine = pipelineStateMachine(this, 'StateMachine', {
      stateMachineName: props.stateMachineName,
      comment: 'pgkeep: replication started by a manifest; hands what is left to the Standard machine',
      type: sfn.StateMachineType.EXPRESS,
      logGroupName: this.logGroupName,
      definition:
        props.targetNames.length > 0
          ? planAll.next(anyLeft)
          : new sfn.Succeed(this, 'No targets to replicate to'),
      invokes: [this.plan.function],
      timeout: EXPRESS_RUN_LIMIT,
    });
  }
}
