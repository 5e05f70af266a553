/**
 * CloudWatch metrics as Embedded Metric Format log lines: the Lambda's log group turns them into
 * metrics, so handlers need no CloudWatch client and no extra permission.
 */

/** CloudWatch namespace of every metric pgkeep emits. */
export const METRIC_NAMESPACE = 'pgkeep';

/** Metric names shared by the Lambdas that emit them and the alarms (cdk/constructs/monitoring.ts) that watch them. */
export const METRICS = {
  dumpAgeSeconds: 'NewestDumpAgeSeconds',
  walAgeSeconds: 'NewestWalAgeSeconds',
  /** Per cluster: gaps in ingest's WAL archive, counted as `pgkeep check --archive` counts them. */
  archiveGaps: 'ArchiveGaps',
  replicationLagSeconds: 'ReplicationLagSeconds',
  verificationSucceeded: 'VerificationSucceeded',
  verificationFailed: 'VerificationFailed',
  /** Manifests rejected as untrustworthy and target copies that differ from their source (dimension Step). */
  trustViolations: 'TrustViolations',
  /** Per cluster and source (ingest or a target): time since its last passed verification. */
  verificationAgeSeconds: 'LastPassedVerificationAgeSeconds',
} as const;

export interface MetricValue {
  readonly name: string;
  readonly value: number;
  readonly unit: 'Seconds' | 'Count' | 'None';
  /** Dimension name -> value; one metric per dimension set. */
  readonly dimensions: Readonly<Record<string, string>>;
}

/**
 * What a run found that a host should not have been able to do (see docs/architecture.md, "Trust
 * model"), as the metric the monitoring construct alarms on: none when there was nothing.
 */
export function trustViolationMetrics(step: 'replication' | 'retention', count: number): MetricValue[] {
  return count > 0
    ? [{ name: METRICS.trustViolations, value: count, unit: 'Count', dimensions: { Step: step } }]
    : [];
}

/** One EMF JSON line per metric (each has its own dimensions). */
export function emfLines(
  namespace: string,
  metrics: readonly MetricValue[],
  now: Date = new Date(),
): string[] {
  return metrics.map((metric) =>
    JSON.stringify({
      _aws: {
        Timestamp: now.getTime(),
        CloudWatchMetrics: [
          {
            Namespace: namespace,
            Dimensions: [Object.keys(metric.dimensions)],
            Metrics: [{ Name: metric.name, Unit: metric.unit }],
          },
        ],
      },
      ...metric.dimensions,
      [metric.name]: metric.value,
    }),
  );
}

/** Writes the lines to stdout, where Lambda's log agent picks them up (handler edge only). */
export function publishMetrics(namespace: string, metrics: readonly MetricValue[]): void {
  for (const line of emfLines(namespace, metrics)) process.stdout.write(`${line}\n`);
}
