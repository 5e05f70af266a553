/**
 * What every pipeline function shares about the buckets: the targets as the Lambdas see them, the
 * environment they read (lambdas/lib/pipeline-env.ts), and the grants on ingest and the targets.
 */
import { Aws } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import type { Construct } from 'constructs';
import { ENV, type RuntimeTarget } from '../../lambdas/lib/pipeline-env.ts';
import type { DeployConfig, TargetConfig } from '../config.ts';
import { INGEST_READ_ACTIONS, SECRET_READ_ACTIONS } from '../iam-actions.ts';
import { acknowledgeWildcardResources } from '../nag.ts';
import { METRIC_NAMESPACE } from '../names.ts';

export interface PipelineTargetsProps {
  readonly config: DeployConfig;
  readonly bucket: s3.IBucket;
  readonly targetSecrets: ReadonlyMap<string, secretsmanager.ISecret>;
  /**
   * Delete-capable provider keys; only retention gets them, so no other function even learns
   * their ARNs. @default - none
   */
  readonly targetDeleteSecrets?: ReadonlyMap<string, secretsmanager.ISecret>;
}

/** The targets as the Lambdas see them: where each is, and which secret holds its key. */
export function runtimeTargets(
  targets: TargetConfig[],
  secrets: ReadonlyMap<string, secretsmanager.ISecret>,
  deleteSecrets: ReadonlyMap<string, secretsmanager.ISecret> = new Map(),
): RuntimeTarget[] {
  return targets.map((t) => {
    if (t.type === 'aws-s3')
      return { name: t.name, type: t.type, bucket: t.bucket, region: t.region, prefix: t.prefix };
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
      credentialsSecretArn: secret.secretArn,
      ...(deleteSecrets.has(t.name)
        ? { deleteCredentialsSecretArn: deleteSecrets.get(t.name)?.secretArn as string }
        : {}),
    };
  });
}

/** The environment every pipeline Lambda gets (lambdas/lib/pipeline-env.ts reads it). */
export function pipelineEnvironment(props: PipelineTargetsProps): Record<string, string> {
  return {
    [ENV.ingestBucket]: props.bucket.bucketName,
    [ENV.clusters]: JSON.stringify(props.config.clusters.map((c) => c.name)),
    [ENV.targets]: JSON.stringify(
      runtimeTargets(props.config.targets, props.targetSecrets, props.targetDeleteSecrets),
    ),
    [ENV.metricNamespace]: METRIC_NAMESPACE,
    // Retention applies them; replication and freshness need them too, so that what retention
    // deleted is never copied back nor counted as lag.
    PGKEEP_RETENTION_POLICIES: JSON.stringify(
      Object.fromEntries(props.config.targets.map((t) => [t.name, t.retention])),
    ),
  };
}

/** Lets `role` read ingest and do `targetActions` on every AWS target; reads every provider secret. */
export function grantTargets(
  role: iam.IRole,
  props: PipelineTargetsProps,
  targetActions: readonly string[],
  scopeForNag: Construct,
): void {
  role.addToPrincipalPolicy(
    new iam.PolicyStatement({
      actions: [...INGEST_READ_ACTIONS],
      // verify/*: the restore-verification reports, which retention's "newest verified" rule reads.
      resources: [
        props.bucket.bucketArn,
        props.bucket.arnForObjects('v1/*'),
        props.bucket.arnForObjects('verify/*'),
      ],
    }),
  );
  const awsTargets = props.config.targets.filter((t) => t.type === 'aws-s3');
  const targetObjects = awsTargets.map((t) => `arn:${Aws.PARTITION}:s3:::${t.bucket}/${t.prefix}v1/*`);
  if (awsTargets.length > 0)
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: [...targetActions],
        resources: [...awsTargets.map((t) => `arn:${Aws.PARTITION}:s3:::${t.bucket}`), ...targetObjects],
      }),
    );
  const secrets = [...props.targetSecrets.values()];
  if (secrets.length > 0)
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: [...SECRET_READ_ACTIONS],
        resources: secrets.map((s) => s.secretArn),
      }),
    );
  acknowledgeWildcardResources(
    scopeForNag,
    'replication, retention and freshness work on every key under the versioned layout (v1/*) of ingest and of each target, and read the verification reports (verify/*) in ingest; the key names are not known in advance',
    props.bucket.arnForObjects('v1/*'),
    props.bucket.arnForObjects('verify/*'),
    ...targetObjects,
  );
}
