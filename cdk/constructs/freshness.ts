import { Duration } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';
import { PIPELINE_PREFIX, VERIFY_REPORT_ROOT } from '../../core/keys.ts';
import { BUCKET_LIST_ACTIONS, FRESHNESS_STATE_ACTIONS, OBJECT_READ_ACTIONS } from '../iam-actions.ts';
import { acknowledgeWildcardResources } from '../nag.ts';
import { PipelineFunction } from './pipeline-function.ts';
import type { PipelineTargets } from './pipeline-targets.ts';

export interface FreshnessProps {
  /** Ingest and the targets, which the function reads. */
  readonly targets: PipelineTargets;
}

/**
 * Freshness: a scheduled Lambda that looks at what is actually in the buckets (newest dump, newest
 * WAL and the gaps in the WAL archive per cluster in ingest, each target's lag from the record
 * replication leaves) and publishes them as metrics. The alarms in Monitoring watch them; no age counts as stale.
 */
export class Freshness extends Construct {
  readonly function: PipelineFunction;

  constructor(scope: Construct, id: string, props: FreshnessProps) {
    super(scope, id);
    const { targets } = props;
    const { bucket } = targets;
    this.function = new PipelineFunction(this, 'Measure', {
      handler: 'freshness/measure',
      description:
        'pgkeep freshness: newest dump, newest WAL, replication lag and last passed verification, from the buckets',
      timeout: Duration.minutes(5),
      memorySizeMiB: 512,
      environment: targets.environment(),
    });
    targets.grantRead(this.function);
    // The time since the last passed verification comes from the verifier's reports.
    const reports = bucket.arnForObjects(`${VERIFY_REPORT_ROOT}/*`);
    this.function.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: [...OBJECT_READ_ACTIONS, ...BUCKET_LIST_ACTIONS],
        resources: [bucket.bucketArn, reports],
      }),
    );
    acknowledgeWildcardResources(
      this.function,
      "freshness reads every cluster's verification reports (verify/*) to measure the time since the last passed verification",
      reports,
    );
    // Its own state (newest dump, WAL walked, gaps found), under a prefix no host may write.
    const stateObjects = bucket.arnForObjects(`${PIPELINE_PREFIX}freshness/*`);
    this.function.role.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: [...FRESHNESS_STATE_ACTIONS], resources: [stateObjects] }),
    );
    acknowledgeWildcardResources(
      this.function,
      'freshness keeps one state object per cluster under pipeline/freshness/',
      stateObjects,
    );
    // Replication's lag records (one per target): the lag is read from them, and nothing else of
    // replication's state.
    const lagRecords = bucket.arnForObjects(`${PIPELINE_PREFIX}replication/*/lag.json`);
    this.function.role.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: ['s3:GetObject'], resources: [lagRecords] }),
    );
    acknowledgeWildcardResources(
      this.function,
      "freshness reads each target's replication lag record under pipeline/replication/<target>/lag.json",
      lagRecords,
    );
  }
}
