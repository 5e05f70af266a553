/**
 * "Record verification result": the outcome of a verification run is what the task's report says,
 * never what the task's exit claimed: no report, an unreadable one, or an earlier failure all count
 * as failed. Publishes VerificationSucceeded / VerificationFailed (the alarm watches the latter).
 */
import { text } from 'node:stream/consumers';
import { parseVerifyReport } from '../../core/verify-report.ts';
import type { LocationFactory } from '../lib/locations.ts';
import { logDecision } from '../lib/log.ts';
import { METRICS, type MetricValue, publishMetrics } from '../lib/metrics.ts';
import { defineTask, lambdaHandler } from '../lib/task.ts';
import type { RecordResultInput, RecordResultOutput } from './types.ts';

const MAX_SUMMARY = 500;

function shorten(value: string): string {
  return value.length > MAX_SUMMARY ? `${value.slice(0, MAX_SUMMARY)}…` : value;
}

export async function recordResult(
  input: RecordResultInput,
  locations: LocationFactory,
): Promise<RecordResultOutput> {
  const where = input.backup
    ? `backup ${input.backup.backupId} of cluster ${input.backup.cluster}`
    : 'no backup picked';
  if (input.error) {
    return {
      passed: false,
      summary: shorten(`${where}: ${input.error.Error ?? 'error'}: ${input.error.Cause ?? 'no cause given'}`),
      reportKey: input.backup?.reportKey,
    };
  }
  if (!input.backup) return { passed: false, summary: 'no backup was picked and no error was recorded' };
  const ingest = await locations.ingest();
  const { reportKey } = input.backup;
  if ((await ingest.storage.head(reportKey)) === undefined)
    return {
      passed: false,
      summary: `${where}: the restore task ended without writing its report ${reportKey}`,
      reportKey,
    };
  const report = parseVerifyReport(await text(await ingest.storage.get(reportKey)));
  if (!report)
    return { passed: false, summary: `${where}: report ${reportKey} is not a valid report`, reportKey };
  // The report must be about what was picked: a report of another run, cluster, backup or source
  // at this key proves nothing about this one.
  const picked = input.backup;
  for (const [field, expected] of [
    ['cluster', picked.cluster],
    ['backupId', picked.backupId],
    ['runId', picked.runId],
    ['source', picked.source],
  ] as const) {
    if (report[field] !== expected)
      return {
        passed: false,
        summary: `${where}: report ${reportKey} has ${field} "${report[field]}", expected "${expected}"`,
        reportKey,
      };
  }
  return {
    passed: report.passed,
    summary: shorten(
      `${where} from ${picked.source}: ${report.passed ? 'restore verified' : 'restore failed'}${report.summary ? `: ${report.summary}` : ''}`,
    ),
    reportKey,
  };
}

/** The metrics of one outcome: both names every time, so each alarm sees a 0 rather than no data. */
export function verificationMetrics(result: RecordResultOutput, cluster: string | undefined): MetricValue[] {
  const metrics: MetricValue[] = [];
  for (const dimensions of [{}, ...(cluster ? [{ Cluster: cluster }] : [])] as Record<string, string>[]) {
    metrics.push(
      { name: METRICS.verificationSucceeded, value: result.passed ? 1 : 0, unit: 'Count', dimensions },
      { name: METRICS.verificationFailed, value: result.passed ? 0 : 1, unit: 'Count', dimensions },
    );
  }
  return metrics;
}

export const recordResultTask = defineTask({
  id: 'verification/record-result',
  run: async (input, { locations }) => {
    const result = await recordResult(input, locations);
    logDecision(result.passed ? 'verification passed' : 'verification failed', {
      cluster: input.backup?.cluster,
      backupId: input.backup?.backupId,
      source: input.backup?.source,
      summary: result.summary,
    });
    return result;
  },
  publish: (output, input, env) =>
    publishMetrics(env.metricNamespace, verificationMetrics(output, input.backup?.cluster)),
});

export const handler = lambdaHandler(recordResultTask);
