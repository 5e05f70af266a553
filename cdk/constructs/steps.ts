/**
 * Building blocks shared by the state machines: a Lambda task with the same Retry on every
 * call, an SNS alert task, and the state machine itself with logs and tracing. Every machine is
 * JSONPath (no JSONata, no ItemBatcher) so aws-local-stepfunctions can execute the synthesized
 * definitions unchanged.
 */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import type { Construct } from 'constructs';
import { acknowledge, acknowledgeWildcardResources } from '../nag.ts';

/** Errors a handler throws when a retry may help (storage briefly unavailable, throttling). */
export const TRANSIENT_ERRORS = ['StorageUnavailableError', 'States.Timeout'];

export interface LambdaStepOptions {
  /** Where the result goes. @default '$' (replaces the state) */
  readonly resultPath?: string;
  /**
   * The Lambda's input; `run` (the execution's name, the run id of the decision log) is added.
   * @default the whole state
   */
  readonly payload?: Record<string, unknown>;
  /** Slightly above the function's own timeout, so the function's error is what gets reported. */
  readonly timeout: Duration;
  /**
   * Retry Lambda service errors and {@link TRANSIENT_ERRORS}. Off where the Catch is the retry and
   * the run's length is bounded (the Express front hands a failed first step to the Standard machine).
   * @default true
   */
  readonly retry?: boolean;
}

/**
 * A Task state invoking `fn` with its result as output (`payloadResponseOnly`, so the Resource is
 * the function ARN: the same shape locally and in AWS). Lambda service errors are retried by CDK's
 * default; transient storage errors here with backoff. Callers add the Catch.
 */
export function lambdaStep(
  scope: Construct,
  name: string,
  fn: lambda.IFunction,
  options: LambdaStepOptions,
): tasks.LambdaInvoke {
  const step = new tasks.LambdaInvoke(scope, name, {
    lambdaFunction: fn,
    payloadResponseOnly: true,
    payload: options.payload
      ? sfn.TaskInput.fromObject({ ...options.payload, 'run.$': '$$.Execution.Name' })
      : undefined,
    resultPath: options.resultPath,
    taskTimeout: sfn.Timeout.duration(options.timeout),
    retryOnServiceExceptions: options.retry !== false,
  });
  if (options.retry === false) return step;
  step.addRetry({
    errors: TRANSIENT_ERRORS,
    interval: Duration.seconds(5),
    maxAttempts: 3,
    backoffRate: 2,
    jitterStrategy: sfn.JitterType.FULL,
  });
  return step;
}

/**
 * "Plan and copy every target": the first step of every replication run, in the Standard machine
 * and in the Express front of manifest runs alike (lambdas/replication/plan-targets.ts). Its input is
 * the execution's input; it copies small plans itself and says in `anyLeft` whether anything is left.
 */
export function planEveryTargetStep(
  scope: Construct,
  fn: lambda.IFunction,
  targetNames: readonly string[],
  options: Pick<LambdaStepOptions, 'timeout' | 'retry'>,
): tasks.LambdaInvoke {
  return lambdaStep(scope, 'Plan and copy every target', fn, {
    payload: { targets: [...targetNames], 'execution.$': '$' },
    ...options,
  });
}

/** An SNS Publish task whose message is built with States.Format from the state; retried, never fatal on its own. */
export function alertStep(
  scope: Construct,
  name: string,
  topic: sns.ITopic,
  subject: string,
  message: sfn.TaskInput,
): tasks.SnsPublish {
  const step = new tasks.SnsPublish(scope, name, {
    topic,
    subject,
    message,
    resultPath: sfn.JsonPath.DISCARD,
    taskTimeout: sfn.Timeout.duration(Duration.seconds(30)),
  });
  step.addRetry({ errors: ['States.ALL'], interval: Duration.seconds(2), maxAttempts: 3, backoffRate: 2 });
  return step;
}

/** Catch everything into `$.error` (Error and Cause), keeping the rest of the state for the handler. */
export const CATCH_ALL: sfn.CatchProps = { errors: ['States.ALL'], resultPath: '$.error' };

export interface PipelineStateMachineProps {
  readonly stateMachineName?: string;
  readonly definition: sfn.IChainable;
  readonly comment: string;
  readonly timeout: Duration;
  /** The functions its tasks invoke (CDK grants lambda:InvokeFunction on `<arn>:*`, every version). */
  readonly invokes: lambda.IFunction[];
  /** Other generated wildcard resources to acknowledge, each with the reason. */
  readonly otherWildcards?: { readonly resource: string; readonly reason: string }[];
  /** @default sfn.StateMachineType.STANDARD */
  readonly type?: sfn.StateMachineType;
  /** A fixed name for its log group, for operators to find it by. @default - generated */
  readonly logGroupName?: string;
}

/**
 * A state machine with every event logged, execution data included (its own log group, one month),
 * and X-Ray tracing. Standard unless `type` says otherwise: an Express execution is seen only in
 * these logs, since Step Functions keeps no history of it.
 */
export function pipelineStateMachine(
  scope: Construct,
  id: string,
  props: PipelineStateMachineProps,
): sfn.StateMachine {
  const logGroup = new logs.LogGroup(scope, `${id}Logs`, {
    logGroupName: props.logGroupName,
    retention: logs.RetentionDays.ONE_MONTH,
    removalPolicy: RemovalPolicy.DESTROY,
  });
  const machine = new sfn.StateMachine(scope, id, {
    stateMachineName: props.stateMachineName,
    definitionBody: sfn.DefinitionBody.fromChainable(props.definition),
    comment: props.comment,
    queryLanguage: sfn.QueryLanguage.JSON_PATH,
    stateMachineType: props.type ?? sfn.StateMachineType.STANDARD,
    timeout: props.timeout,
    tracingEnabled: true,
    logs: { destination: logGroup, level: sfn.LogLevel.ALL, includeExecutionData: true },
  });
  acknowledge(
    machine,
    'X-Ray (xray:PutTraceSegments, xray:GetSamplingRules, ...) and CloudWatch Logs delivery (logs:CreateLogDelivery, ...) accept no resource other than "*"',
    'AwsSolutions-IAM5[Resource::*]',
  );
  acknowledgeWildcardResources(
    machine,
    'CDK grants lambda:InvokeFunction on "<function ARN>:*" so that every version and alias of the function can be invoked',
    ...props.invokes.map((fn) => `${fn.functionArn}:*`),
  );
  for (const { resource, reason } of props.otherWildcards ?? [])
    acknowledgeWildcardResources(machine, reason, resource);
  return machine;
}
