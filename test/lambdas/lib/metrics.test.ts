// Metrics leave the Lambdas as CloudWatch Embedded Metric Format lines: one line per metric, with
// the namespace, its dimensions and the value where CloudWatch looks for them.
import { describe, expect, it } from 'vitest';
import { emfLines, METRIC_NAMESPACE } from '../../../lambdas/lib/metrics.ts';
import { verificationMetrics } from '../../../lambdas/verification/record-result.ts';

describe('emfLines', () => {
  it('writes one EMF document per metric with its own dimensions', () => {
    const now = new Date('2026-11-22T05:00:00Z');
    const lines = emfLines(
      METRIC_NAMESPACE,
      [
        { name: 'NewestWalAgeSeconds', value: 42, unit: 'Seconds', dimensions: { Cluster: 'main' } },
        {
          name: 'ReplicationLagSeconds',
          value: 0,
          unit: 'Seconds',
          dimensions: { Cluster: 'main', Target: 'b2' },
        },
      ],
      now,
    ).map((line) => JSON.parse(line));
    expect(lines).toEqual([
      {
        _aws: {
          Timestamp: now.getTime(),
          CloudWatchMetrics: [
            {
              Namespace: 'pgkeep',
              Dimensions: [['Cluster']],
              Metrics: [{ Name: 'NewestWalAgeSeconds', Unit: 'Seconds' }],
            },
          ],
        },
        Cluster: 'main',
        NewestWalAgeSeconds: 42,
      },
      {
        _aws: {
          Timestamp: now.getTime(),
          CloudWatchMetrics: [
            {
              Namespace: 'pgkeep',
              Dimensions: [['Cluster', 'Target']],
              Metrics: [{ Name: 'ReplicationLagSeconds', Unit: 'Seconds' }],
            },
          ],
        },
        Cluster: 'main',
        Target: 'b2',
        ReplicationLagSeconds: 0,
      },
    ]);
  });
});

describe('verificationMetrics', () => {
  it('publishes both outcomes every run (a 0 is data, not silence), in total and per cluster', () => {
    const metrics = verificationMetrics({ passed: false, summary: 'x' }, 'main');
    expect(metrics).toEqual([
      { name: 'VerificationSucceeded', value: 0, unit: 'Count', dimensions: {} },
      { name: 'VerificationFailed', value: 1, unit: 'Count', dimensions: {} },
      { name: 'VerificationSucceeded', value: 0, unit: 'Count', dimensions: { Cluster: 'main' } },
      { name: 'VerificationFailed', value: 1, unit: 'Count', dimensions: { Cluster: 'main' } },
    ]);
  });
});
