import { Duration, Stack, TimeZone } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as eventsTargets from 'aws-cdk-lib/aws-events-targets';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as schedulerTargets from 'aws-cdk-lib/aws-scheduler-targets';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { FORMAT_PREFIX } from '../../core/keys.ts';
import { acknowledgeWildcardResources } from '../nag.ts';

/** What runs on a schedule. */
export type ScheduleName =
  | 'replication'
  | 'replicationVerify'
  | 'replicationReconcile'
  | 'retention'
  | 'verification'
  | 'freshness';

export interface PipelineSchedulesProps {
  /** IANA time zone the expressions are read in (`Europe/Berlin`). */
  readonly timeZone: string;
  /** EventBridge Scheduler expressions (`cron(…)`, `rate(…)`) by what they start. */
  readonly expressions: Readonly<Record<ScheduleName, string>>;
  readonly bucket: s3.IBucket;
  /** The Standard replication machine: scheduled, verify and reconcile runs. */
  readonly replication: sfn.IStateMachine;
  /** The Express front that a written manifest starts; it hands large backups to `replication`. */
  readonly manifestRuns: sfn.IStateMachine;
  readonly retention: sfn.IStateMachine;
  readonly verification: sfn.IStateMachine;
  readonly freshness: lambda.IFunction;
}

/**
 * When things run: one EventBridge Scheduler schedule per capability (expressions from the config),
 * plus an EventBridge rule that starts replication as soon as a manifest lands in ingest, so a
 * finished backup reaches the targets without waiting for the next drain. Scheduled runs start the
 * Standard machine (each one kept and shown in the console); a manifest starts the Express front,
 * which costs a fraction of a Standard run and hands what it cannot finish to the Standard machine.
 */
export class PipelineSchedules extends Construct {
  /** Capability -> its schedule, for tests and outputs. */
  readonly schedules: Readonly<Record<ScheduleName, scheduler.Schedule>>;

  constructor(scope: Construct, id: string, props: PipelineSchedulesProps) {
    super(scope, id);
    const schedules = props.expressions;
    const timeZone = TimeZone.of(props.timeZone);
    const expression = (value: string) => scheduler.ScheduleExpression.expression(value, timeZone);
    // A missed run is replaced by the next one (every run is idempotent), so no dead-letter queue.
    const targetProps = { retryAttempts: 2, maxEventAge: Duration.hours(1) };
    const startMachine = (machine: sfn.IStateMachine, input: Record<string, unknown> = {}) =>
      new schedulerTargets.StepFunctionsStartExecution(machine, {
        ...targetProps,
        input: scheduler.ScheduleTargetInput.fromObject({ trigger: 'schedule', ...input }),
      });
    this.schedules = {
      replication: new scheduler.Schedule(this, 'Replication', {
        description: 'pgkeep: drain new objects from ingest to every target',
        schedule: expression(schedules.replication),
        target: startMachine(props.replication),
      }),
      replicationVerify: new scheduler.Schedule(this, 'ReplicationVerify', {
        description: 'pgkeep: re-read every copy on every target and re-copy any that fails its sha256',
        schedule: expression(schedules.replicationVerify),
        target: startMachine(props.replication, { verify: true }),
      }),
      replicationReconcile: new scheduler.Schedule(this, 'ReplicationReconcile', {
        description: 'pgkeep: compare ingest with every target in full and copy what the cursors missed',
        schedule: expression(schedules.replicationReconcile),
        target: startMachine(props.replication, { reconcile: true }),
      }),
      retention: new scheduler.Schedule(this, 'Retention', {
        description: "pgkeep: apply each target's retention policy",
        schedule: expression(schedules.retention),
        target: startMachine(props.retention),
      }),
      verification: new scheduler.Schedule(this, 'Verification', {
        description: 'pgkeep: restore a backup and check it',
        schedule: expression(schedules.verification),
        target: startMachine(props.verification),
      }),
      freshness: new scheduler.Schedule(this, 'Freshness', {
        description: 'pgkeep: measure backup freshness and replication lag from the buckets',
        schedule: expression(schedules.freshness),
        target: new schedulerTargets.LambdaInvoke(props.freshness, {
          ...targetProps,
          input: scheduler.ScheduleTargetInput.fromObject({ trigger: 'schedule' }),
        }),
      }),
    };

    // The scheduler's role is a stack-level singleton per target, so the acknowledgment is on the stack.
    acknowledgeWildcardResources(
      Stack.of(this),
      'CDK grants lambda:InvokeFunction on "<function ARN>:*" so that every version of the freshness function can be invoked',
      `${props.freshness.functionArn}:*`,
    );

    new events.Rule(this, 'ManifestWritten', {
      description: 'pgkeep: a backup finished (its manifest was written); replicate it now',
      eventPattern: {
        source: ['aws.s3'],
        detailType: ['Object Created'],
        detail: {
          bucket: { name: [props.bucket.bucketName] },
          object: { key: [{ wildcard: `${FORMAT_PREFIX}/*/manifests/*.json` }] },
        },
      },
      targets: [
        new eventsTargets.SfnStateMachine(props.manifestRuns, {
          input: events.RuleTargetInput.fromObject({
            trigger: 'manifest',
            key: events.EventField.fromPath('$.detail.object.key'),
          }),
          retryAttempts: 2,
        }),
      ],
    });
  }
}
