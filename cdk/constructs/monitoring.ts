import { Duration, NestedStack } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { INGEST_SOURCE } from '../../lambdas/verification/sources.ts';
import { METRIC_NAMESPACE, METRICS } from '../names.ts';

export interface AlertTopicProps {
  readonly emails: string[];
}

/** The SNS topic every alarm and every failure alert goes to, with the configured email subscriptions. */
export class AlertTopic extends Construct {
  readonly topic: sns.Topic;

  constructor(scope: Construct, id: string, props: AlertTopicProps) {
    super(scope, id);
    this.topic = new sns.Topic(this, 'Topic', { displayName: 'pgkeep alerts', enforceSSL: true });
    for (const email of props.emails) this.topic.addSubscription(new subscriptions.EmailSubscription(email));
  }
}

export interface MonitoringProps {
  /** The dashboard's name. */
  readonly dashboardName: string;
  readonly clusterNames: readonly string[];
  readonly targetNames: readonly string[];
  /** A cluster's newest logical dump older than this alarms. */
  readonly maxDumpAgeHours: number;
  /** No WAL of a cluster reaching ingest for this long alarms. */
  readonly maxWalAgeMinutes: number;
  /** A target this far behind ingest (two periods running) alarms. */
  readonly maxReplicationLagMinutes: number;
  /** No passed restore verification from a source for this long alarms. */
  readonly maxVerificationAgeDays: number;
  readonly topic: sns.ITopic;
  readonly stateMachines: Readonly<Record<'replication' | 'retention' | 'verification', sfn.IStateMachine>>;
  /** The Express front of replication started by a manifest: its failed and timed-out runs count as replication's. */
  readonly manifestRuns: sfn.IStateMachine;
}

/** Resources of per-cluster alarms one nested stack holds: well under CloudFormation's 500. */
const ALARMS_PER_NESTED_STACK = 400;

/**
 * Where each cluster's alarms go: the stack itself for a few clusters, otherwise nested stacks of
 * as many clusters as fit, so a deployment of hundreds of clusters stays within CloudFormation's
 * 500 resources per stack.
 */
function clusterAlarmScopes(
  parent: Construct,
  clusters: number,
  targets: number,
): (index: number) => Construct {
  // Dump age, WAL age, archive gaps, one lag per target, one verification age per source (ingest
  // and each target).
  const perCluster = 3 + targets + (1 + targets);
  const clustersPerStack = Math.max(1, Math.floor(ALARMS_PER_NESTED_STACK / perCluster));
  if (clusters * perCluster <= ALARMS_PER_NESTED_STACK / 2) return () => parent;
  const stacks = new Map<number, Construct>();
  return (index) => {
    const n = Math.floor(index / clustersPerStack);
    let stack = stacks.get(n);
    if (!stack) {
      stack = new NestedStack(parent, `ClusterAlarms${n + 1}`, {
        description: `pgkeep: freshness alarms of clusters ${n * clustersPerStack + 1} to ${(n + 1) * clustersPerStack}`,
      });
      stacks.set(n, stack);
    }
    return stack;
  };
}

/**
 * Alarms and the dashboard. Freshness alarms treat missing data as breaching: a metric that stops
 * arriving means nobody is measuring, which is as bad as stale backups.
 */
export class Monitoring extends Construct {
  readonly alarms: cloudwatch.Alarm[] = [];
  readonly dashboard: cloudwatch.Dashboard;

  constructor(scope: Construct, id: string, props: MonitoringProps) {
    super(scope, id);
    const action = new cwActions.SnsAction(props.topic);
    const alarm = (alarmId: string, alarmProps: cloudwatch.AlarmProps, scope: Construct = this) => {
      const created = new cloudwatch.Alarm(scope, alarmId, alarmProps);
      created.addAlarmAction(action);
      created.addOkAction(action);
      this.alarms.push(created);
      return created;
    };
    const metric = (metricName: string, dimensionsMap: Record<string, string>, statistic = 'Maximum') =>
      new cloudwatch.Metric({
        namespace: METRIC_NAMESPACE,
        metricName,
        dimensionsMap,
        statistic,
        period: Duration.minutes(15),
      });

    const sum = { period: Duration.minutes(5), statistic: 'Sum' };
    for (const [capability, machine] of Object.entries(props.stateMachines)) {
      const failures: Record<string, cloudwatch.IMetric> = {
        failed: machine.metricFailed(sum),
        timedOut: machine.metricTimedOut(sum),
        aborted: machine.metricAborted(sum),
      };
      // An Express execution cannot be aborted; its failures have no console page, only its logs.
      if (capability === 'replication')
        Object.assign(failures, {
          manifestRunFailed: props.manifestRuns.metricFailed(sum),
          manifestRunTimedOut: props.manifestRuns.metricTimedOut(sum),
        });
      alarm(`${capability}ExecutionsFailed`, {
        alarmDescription:
          capability === 'replication'
            ? 'pgkeep: a replication run failed, timed out or was aborted; open the execution in the Step Functions console, or for a run started by a manifest read the log group of the ReplicationManifestRunsLogGroup output'
            : `pgkeep: a ${capability} run failed, timed out or was aborted; open the execution in the Step Functions console`,
        metric: new cloudwatch.MathExpression({
          label: `${capability} failed runs`,
          // FILL: a metric without data in the period (no run failed that way) counts 0, not "missing".
          expression: Object.keys(failures)
            .map((id) => `FILL(${id}, 0)`)
            .join(' + '),
          usingMetrics: failures,
          period: Duration.minutes(5),
        }),
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
    }

    const freshnessWidgets: cloudwatch.IWidget[] = [];
    const scopeOf = clusterAlarmScopes(this, props.clusterNames.length, props.targetNames.length);
    for (const [index, cluster] of props.clusterNames.entries()) {
      const scope = scopeOf(index);
      const dump = metric(METRICS.dumpAgeSeconds, { Cluster: cluster });
      const wal = metric(METRICS.walAgeSeconds, { Cluster: cluster });
      alarm(
        `StaleDump-${cluster}`,
        {
          alarmDescription: `pgkeep: the newest logical dump of cluster ${cluster} in ingest is older than ${props.maxDumpAgeHours} h`,
          metric: dump,
          threshold: props.maxDumpAgeHours * 3600,
          evaluationPeriods: 1,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
          treatMissingData: cloudwatch.TreatMissingData.BREACHING,
        },
        scope,
      );
      alarm(
        `StaleWal-${cluster}`,
        {
          alarmDescription: `pgkeep: no WAL from cluster ${cluster} has reached ingest for ${props.maxWalAgeMinutes} min`,
          metric: wal,
          threshold: props.maxWalAgeMinutes * 60,
          evaluationPeriods: 1,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
          treatMissingData: cloudwatch.TreatMissingData.BREACHING,
        },
        scope,
      );
      // A gap is for good (ingest is create-only): it alarms until a window without it starts.
      // Missing data is not a gap; StaleWal already alarms when nothing is measured.
      alarm(
        `ArchiveGaps-${cluster}`,
        {
          alarmDescription: `pgkeep: the WAL archive of cluster ${cluster} in ingest has a gap; pgkeep check --archive names it, and recovery across it stops there: take a new base backup`,
          metric: metric(METRICS.archiveGaps, { Cluster: cluster }),
          threshold: 0,
          evaluationPeriods: 1,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
          treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        },
        scope,
      );
      const lagMetrics: cloudwatch.IMetric[] = [];
      for (const target of props.targetNames) {
        const lag = metric(METRICS.replicationLagSeconds, { Cluster: cluster, Target: target });
        lagMetrics.push(lag);
        alarm(
          `ReplicationLag-${cluster}-${target}`,
          {
            alarmDescription: `pgkeep: target ${target} is more than ${props.maxReplicationLagMinutes} min behind ingest for cluster ${cluster}`,
            metric: lag,
            threshold: props.maxReplicationLagMinutes * 60,
            evaluationPeriods: 2,
            comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treatMissingData: cloudwatch.TreatMissingData.BREACHING,
          },
          scope,
        );
      }
      for (const source of [INGEST_SOURCE, ...props.targetNames]) {
        alarm(
          `VerificationAge-${cluster}-${source}`,
          {
            alarmDescription: `pgkeep: no restore of cluster ${cluster} from ${source} has passed verification for ${props.maxVerificationAgeDays} days`,
            metric: metric(METRICS.verificationAgeSeconds, { Cluster: cluster, Source: source }),
            threshold: props.maxVerificationAgeDays * 86_400,
            evaluationPeriods: 1,
            comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treatMissingData: cloudwatch.TreatMissingData.BREACHING,
          },
          scope,
        );
      }
      freshnessWidgets.push(
        new cloudwatch.GraphWidget({
          title: `${cluster}: age of newest dump and WAL (s)`,
          left: [dump, wal],
          width: 12,
        }),
        new cloudwatch.GraphWidget({
          title: `${cluster}: replication lag (s)`,
          left: lagMetrics,
          width: 12,
        }),
      );
    }

    const verificationFailed = new cloudwatch.Metric({
      namespace: METRIC_NAMESPACE,
      metricName: METRICS.verificationFailed,
      statistic: 'Sum',
      period: Duration.hours(1),
    });
    alarm('VerificationFailed', {
      alarmDescription:
        'pgkeep: a restore verification failed; the report is under verify/<cluster>/ in ingest',
      metric: verificationFailed,
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });

    // A manifest rejected as untrustworthy, or a target copy whose source changed: what only a
    // compromised (or broken) host produces. The run's output names the keys.
    for (const step of ['replication', 'retention'] as const)
      alarm(`TrustViolation-${step}`, {
        alarmDescription: `pgkeep: ${step} found a manifest it rejected or a source object that changed after it was copied; the ${step} run's output names the keys`,
        metric: metric(METRICS.trustViolations, { Step: step }, 'Sum'),
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });

    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: props.dashboardName,
      defaultInterval: Duration.days(7),
    });
    this.dashboard.addWidgets(
      new cloudwatch.AlarmStatusWidget({ title: 'pgkeep alarms', alarms: this.alarms, width: 24 }),
    );
    this.dashboard.addWidgets(...freshnessWidgets);
    this.dashboard.addWidgets(
      ...Object.entries(props.stateMachines).map(
        ([capability, machine]) =>
          new cloudwatch.GraphWidget({
            title: `${capability} runs`,
            left: [machine.metricSucceeded(), machine.metricFailed()],
            width: 8,
          }),
      ),
      new cloudwatch.GraphWidget({
        title: 'replication runs started by a manifest (Express)',
        left: [props.manifestRuns.metricSucceeded(), props.manifestRuns.metricFailed()],
        width: 8,
      }),
      new cloudwatch.GraphWidget({
        title: 'restore verification',
        left: [
          verificationFailed,
          new cloudwatch.Metric({
            namespace: METRIC_NAMESPACE,
            metricName: METRICS.verificationSucceeded,
            statistic: 'Sum',
            period: Duration.hours(1),
          }),
        ],
        width: 8,
      }),
    );
  }
}
