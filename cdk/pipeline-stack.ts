import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import type { Construct } from 'constructs';
import type { DeployConfig } from './config.ts';
import { Freshness } from './constructs/freshness.ts';
import { AlertTopic, Monitoring } from './constructs/monitoring.ts';
import { PipelineTargets } from './constructs/pipeline-targets.ts';
import { Replication } from './constructs/replication.ts';
import { Retention } from './constructs/retention.ts';
import { PipelineSchedules } from './constructs/schedules.ts';
import { Verification } from './constructs/verification.ts';
import { ingestBucketName } from './names.ts';

export interface PipelineStackProps extends StackProps {
  readonly config: DeployConfig;
  readonly key: kms.IKey;
  readonly targetSecrets: ReadonlyMap<string, secretsmanager.ISecret>;
  /** Delete-capable provider keys: given to retention only. @default - none */
  readonly targetDeleteSecrets?: ReadonlyMap<string, secretsmanager.ISecret>;
}

/**
 * Everything that holds no data and can be replaced at will: functions, state machines, schedules,
 * the verification cluster, alarms. Deleting this stack stops the pipeline and loses nothing.
 */
export class PipelineStack extends Stack {
  readonly replication: Replication;
  readonly retention: Retention;
  readonly verification: Verification;
  readonly freshness: Freshness;
  readonly alerts: AlertTopic;
  readonly monitoring: Monitoring;
  readonly schedules: PipelineSchedules;

  constructor(scope: Construct, id: string, props: PipelineStackProps) {
    super(scope, id, props);
    const { config, key, targetSecrets } = props;
    const bucket = s3.Bucket.fromBucketName(this, 'IngestBucket', ingestBucketName(config.name));
    this.alerts = new AlertTopic(this, 'Alerts', { emails: config.alerts.emails });
    const alertTopic = this.alerts.topic;
    const targets = new PipelineTargets(this, 'Targets', {
      bucket,
      clusterNames: config.clusters.map((c) => c.name),
      targets: config.targets,
      targetSecrets,
      targetDeleteSecrets: props.targetDeleteSecrets ?? new Map(),
    });
    this.replication = new Replication(this, 'Replication', {
      stateMachineName: `${config.name}-replication`,
      targets,
      alertTopic,
    });
    this.retention = new Retention(this, 'Retention', {
      stateMachineName: `${config.name}-retention`,
      targets,
      alertTopic,
      ...(config.ingest.keepDays === undefined ? {} : { ingestKeepDays: config.ingest.keepDays }),
    });
    this.verification = new Verification(this, 'Verification', {
      deploymentName: config.name,
      clusterNames: config.clusters.map((c) => c.name),
      settings: config.verification,
      targets,
      key,
      alertTopic,
    });
    this.freshness = new Freshness(this, 'Freshness', { targets });
    this.schedules = new PipelineSchedules(this, 'Schedules', {
      timeZone: config.schedules.timeZone,
      expressions: config.schedules,
      bucket,
      replication: this.replication.stateMachine,
      manifestRuns: this.replication.manifestRuns.stateMachine,
      retention: this.retention.stateMachine,
      verification: this.verification.stateMachine,
      freshness: this.freshness.function.function,
    });
    this.monitoring = new Monitoring(this, 'Monitoring', {
      dashboardName: `${config.name}-backups`,
      clusterNames: config.clusters.map((c) => c.name),
      targetNames: config.targets.map((t) => t.name),
      maxDumpAgeHours: config.freshness.maxDumpAgeHours,
      maxWalAgeMinutes: config.freshness.maxWalAgeMinutes,
      maxReplicationLagMinutes: config.freshness.maxReplicationLagMinutes,
      maxVerificationAgeDays: config.freshness.maxVerificationAgeDays,
      topic: alertTopic,
      stateMachines: {
        replication: this.replication.stateMachine,
        retention: this.retention.stateMachine,
        verification: this.verification.stateMachine,
      },
      manifestRuns: this.replication.manifestRuns.stateMachine,
    });

    new CfnOutput(this, 'AlertTopicArn', { value: alertTopic.topicArn });
    new CfnOutput(this, 'ReplicationStateMachineArn', {
      value: this.replication.stateMachine.stateMachineArn,
    });
    new CfnOutput(this, 'ReplicationManifestRunsLogGroup', {
      description: 'runs started by a manifest (an Express state machine) are seen only in this log group',
      value: this.replication.manifestRuns.logGroupName,
    });
    new CfnOutput(this, 'RetentionStateMachineArn', { value: this.retention.stateMachine.stateMachineArn });
    new CfnOutput(this, 'VerificationStateMachineArn', {
      value: this.verification.stateMachine.stateMachineArn,
    });
    new CfnOutput(this, 'DashboardName', { value: this.monitoring.dashboard.dashboardName });
  }
}
