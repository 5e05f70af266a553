/**
 * What every pipeline function shares about the buckets: the targets as the Lambdas see them, the
 * environment they read (lambdas/lib/pipeline-env.ts), and the grants on ingest and the targets.
 */
import { Aws } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { ENV, type RuntimeTarget } from '../../lambdas/lib/pipeline-env.ts';
import type { TargetConfig } from '../config.ts';
import {
  INGEST_DELETE_ACTIONS,
  INGEST_READ_ACTIONS,
  SECRET_READ_ACTIONS,
  TARGET_DELETE_ACTIONS,
  TARGET_READ_ACTIONS,
  TARGET_WRITE_ACTIONS,
} from '../iam-actions.ts';
import { acknowledgeWildcardResources } from '../nag.ts';
import { METRIC_NAMESPACE } from '../names.ts';
import type { PipelineFunction } from './pipeline-function.ts';

export interface PipelineTargetsProps {
  /** The ingest bucket every pipeline function reads. */
  readonly bucket: s3.IBucket;
  /** The clusters whose objects the pipeline handles. */
  readonly clusterNames: readonly string[];
  readonly targets: readonly TargetConfig[];
  /** The S3-compatible targets' keys (read and write, never delete), by target name. */
  readonly targetSecrets: ReadonlyMap<string, secretsmanager.ISecret>;
  /**
   * Delete-capable provider keys; only a grantee of {@link PipelineTargets.grantDelete} learns
   * their ARNs and may read them. @default - none
   */
  readonly targetDeleteSecrets?: ReadonlyMap<string, secretsmanager.ISecret>;
}

/** The targets as the Lambdas see them: where each is, and which secret holds its key. */
export function runtimeTargets(
  targets: readonly TargetConfig[],
  secrets: ReadonlyMap<string, secretsmanager.ISecret>,
  deleteSecrets: ReadonlyMap<string, secretsmanager.ISecret> = new Map(),
): RuntimeTarget[] {
  return targets.map((t) => {
    const bundles = t.walBundles ? { walBundles: true } : {};
    if (t.type === 'aws-s3')
      return { name: t.name, type: t.type, bucket: t.bucket, region: t.region, prefix: t.prefix, ...bundles };
    const secret = secrets.get(t.name);
    if (!secret)
      throw new Error(
        `no secret for target "${t.name}"; TargetCredentials creates one per s3-compatible target`,
      );
    return {
      name: t.name,
      type: t.type,
      endpoint: t.endpoint,
      bucket: t.bucket,
      region: t.region,
      forcePathStyle: t.forcePathStyle,
      prefix: t.prefix,
      ...(t.conditionalWrites ? { conditionalWrites: true } : {}),
      ...bundles,
      credentialsSecretArn: secret.secretArn,
      ...(deleteSecrets.has(t.name)
        ? { deleteCredentialsSecretArn: deleteSecrets.get(t.name)?.secretArn as string }
        : {}),
    };
  });
}

/**
 * Ingest and the replication targets as the pipeline functions use them: the environment they read
 * (lambdas/lib/pipeline-env.ts) and, as aws-cdk-lib's Bucket does, grants as methods. Every grant
 * includes reading ingest (`v1/*` and the verification reports) and every provider key; the target
 * actions differ. Creates no resource of its own.
 */
export class PipelineTargets extends Construct {
  readonly bucket: s3.IBucket;
  readonly targets: readonly TargetConfig[];
  /** The S3-compatible targets' read-write keys, by target name. */
  readonly targetSecrets: ReadonlyMap<string, secretsmanager.ISecret>;
  private readonly props: PipelineTargetsProps;

  constructor(scope: Construct, id: string, props: PipelineTargetsProps) {
    super(scope, id);
    this.props = props;
    this.bucket = props.bucket;
    this.targets = props.targets;
    this.targetSecrets = props.targetSecrets;
  }

  /** The clusters whose objects the pipeline handles. */
  get clusterNames(): string[] {
    return [...this.props.clusterNames];
  }

  /** The targets' names, in the configured order. */
  get names(): string[] {
    return this.targets.map((t) => t.name);
  }

  /**
   * The environment of a pipeline Lambda. With `deleteCredentials`, the targets name their
   * delete-capable secrets too (for the function given {@link grantDelete}).
   */
  environment(
    options: { readonly deleteCredentials?: boolean; readonly ingestKeepDays?: number } = {},
  ): Record<string, string> {
    const { bucket, clusterNames, targets, targetSecrets, targetDeleteSecrets } = this.props;
    return {
      [ENV.ingestBucket]: bucket.bucketName,
      [ENV.clusters]: JSON.stringify(clusterNames),
      [ENV.targets]: JSON.stringify(
        runtimeTargets(targets, targetSecrets, options.deleteCredentials ? targetDeleteSecrets : undefined),
      ),
      [ENV.metricNamespace]: METRIC_NAMESPACE,
      ...(options.ingestKeepDays === undefined
        ? {}
        : { [ENV.ingestKeepDays]: String(options.ingestKeepDays) }),
      // Retention applies them; replication and freshness need them too, so that what retention
      // deleted is never copied back nor counted as lag.
      PGKEEP_RETENTION_POLICIES: JSON.stringify(
        Object.fromEntries(targets.map((t) => [t.name, t.retention])),
      ),
    };
  }

  /**
   * Lets `grantee` read ingest and the targets. With `objectLockState`, it may also read an
   * object's Object Lock retention (HeadObject returns it only with s3:GetObjectRetention).
   */
  grantRead(grantee: PipelineFunction, options: { readonly objectLockState?: boolean } = {}): void {
    const readLock = options.objectLockState
      ? TARGET_DELETE_ACTIONS.filter((a) => a === 's3:GetObjectRetention')
      : [];
    this.grant(grantee, [...TARGET_READ_ACTIONS, ...readLock]);
  }

  /** Lets `grantee` read ingest and write new objects at the targets (never delete). */
  grantWrite(grantee: PipelineFunction): void {
    this.grant(grantee, TARGET_WRITE_ACTIONS);
  }

  /** Lets `grantee` read ingest, read and delete at the targets, and read the delete-capable keys. */
  grantDelete(grantee: PipelineFunction): void {
    this.grant(grantee, [...TARGET_READ_ACTIONS, ...TARGET_DELETE_ACTIONS]);
    const deleteSecrets = [...(this.props.targetDeleteSecrets ?? new Map()).values()];
    if (deleteSecrets.length > 0)
      grantee.role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          sid: 'ReadDeleteCapableProviderKeys',
          actions: [...SECRET_READ_ACTIONS],
          resources: deleteSecrets.map((s) => s.secretArn),
        }),
      );
  }

  /**
   * Lets `grantee` delete under ingest's `v1/*` (ingest pruning's delete step), and nothing else:
   * not ingest's `pipeline/` or `verify/`, no version, no target, no provider key.
   */
  grantIngestDelete(grantee: PipelineFunction): void {
    const objects = this.bucket.arnForObjects('v1/*');
    grantee.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'PruneIngest',
        actions: [...INGEST_DELETE_ACTIONS],
        resources: [objects],
      }),
    );
    acknowledgeWildcardResources(
      grantee,
      "ingest pruning deletes keys under the versioned layout (v1/*) that the planner names; the key names are not known in advance, and the step's own guard refuses any key outside the batch's cluster prefix",
      objects,
    );
  }

  private grant(grantee: PipelineFunction, targetActions: readonly string[]): void {
    const { bucket, targets, targetSecrets } = this.props;
    grantee.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: [...INGEST_READ_ACTIONS],
        // verify/*: the restore-verification reports, which retention's "newest verified" rule reads.
        resources: [bucket.bucketArn, bucket.arnForObjects('v1/*'), bucket.arnForObjects('verify/*')],
      }),
    );
    const awsTargets = targets.filter((t) => t.type === 'aws-s3');
    const targetObjects = awsTargets.map((t) => `arn:${Aws.PARTITION}:s3:::${t.bucket}/${t.prefix}v1/*`);
    if (awsTargets.length > 0)
      grantee.role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          actions: [...targetActions],
          resources: [...awsTargets.map((t) => `arn:${Aws.PARTITION}:s3:::${t.bucket}`), ...targetObjects],
        }),
      );
    const secrets = [...targetSecrets.values()];
    if (secrets.length > 0)
      grantee.role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          actions: [...SECRET_READ_ACTIONS],
          resources: secrets.map((s) => s.secretArn),
        }),
      );
    acknowledgeWildcardResources(
      grantee,
      'replication, retention and freshness work on every key under the versioned layout (v1/*) of ingest and of each target, and read the verification reports (verify/*) in ingest; the key names are not known in advance',
      bucket.arnForObjects('v1/*'),
      bucket.arnForObjects('verify/*'),
      ...targetObjects,
    );
  }
}
