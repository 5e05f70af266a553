/**
 * The task role of one cluster's verification runs: it reads only that cluster's objects (in
 * ingest and in each AWS target), writes only that cluster's reports, reads the providers' keys,
 * and may unseal the automation identity under its encryption context, and nothing else.
 */
import { Aws } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import type { Construct } from 'constructs';
import { clusterPrefix, verifyReportPrefix } from '../../core/keys.ts';
import { AUTOMATION_IDENTITY_CONTEXT } from '../../core/verify-task.ts';
import type { TargetConfig } from '../config.ts';
import {
  BUCKET_LIST_ACTIONS,
  OBJECT_READ_ACTIONS,
  SECRET_READ_ACTIONS,
  VERIFY_KMS_ACTIONS,
  VERIFY_REPORT_WRITE_ACTIONS,
} from '../iam-actions.ts';
import { acknowledgeWildcardResources } from '../nag.ts';
import { verificationTaskRoleName, verificationTaskRolePath } from '../names.ts';

export interface VerificationTaskRoleProps {
  /** The deployment's name, which the role's name starts with. */
  readonly deploymentName: string;
  readonly bucket: s3.IBucket;
  readonly key: kms.IKey;
  readonly targets: readonly TargetConfig[];
  readonly targetSecrets: ReadonlyMap<string, secretsmanager.ISecret>;
}

export function verificationTaskRole(
  scope: Construct,
  props: VerificationTaskRoleProps,
  clusterName: string,
): iam.Role {
  const { bucket } = props;
  const awsTargets = props.targets.filter((t) => t.type === 'aws-s3');
  const secrets = [...props.targetSecrets.values()];
  const own = clusterPrefix(clusterName);
  const reports = verifyReportPrefix(clusterName);
  const statements: iam.PolicyStatement[] = [];
  const objectArns = [
    bucket.arnForObjects(`${own}*`),
    ...awsTargets.map((t) => `arn:${Aws.PARTITION}:s3:::${t.bucket}/${t.prefix}${own}*`),
  ];
  statements.push(
    new iam.PolicyStatement({
      sid: 'ReadOwnCluster',
      actions: [...OBJECT_READ_ACTIONS],
      resources: objectArns,
    }),
  );
  statements.push(
    new iam.PolicyStatement({
      sid: 'ListIngestOwnCluster',
      actions: [...BUCKET_LIST_ACTIONS],
      resources: [bucket.bucketArn],
      conditions: { StringLike: { 's3:prefix': [`${own}*`] } },
    }),
  );
  for (const target of awsTargets)
    statements.push(
      new iam.PolicyStatement({
        actions: [...BUCKET_LIST_ACTIONS],
        resources: [`arn:${Aws.PARTITION}:s3:::${target.bucket}`],
        conditions: { StringLike: { 's3:prefix': [`${target.prefix}${own}*`] } },
      }),
    );
  statements.push(
    new iam.PolicyStatement({
      sid: 'WriteOwnReports',
      actions: [...VERIFY_REPORT_WRITE_ACTIONS],
      resources: [bucket.arnForObjects(`${reports}*`)],
    }),
  );
  if (secrets.length > 0)
    statements.push(
      new iam.PolicyStatement({
        sid: 'ReadProviderCredentials',
        actions: [...SECRET_READ_ACTIONS],
        resources: secrets.map((secret) => secret.secretArn),
      }),
    );
  statements.push(
    new iam.PolicyStatement({
      sid: 'UnsealAutomationIdentity',
      actions: [...VERIFY_KMS_ACTIONS],
      resources: [props.key.keyArn],
      conditions: {
        StringEquals: Object.fromEntries(
          Object.entries(AUTOMATION_IDENTITY_CONTEXT).map(([k, v]) => [`kms:EncryptionContext:${k}`, v]),
        ),
      },
    }),
  );
  const role = new iam.Role(scope, `TaskRole-${clusterName}`, {
    roleName: verificationTaskRoleName(props.deploymentName, clusterName),
    path: verificationTaskRolePath(),
    assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
    description: `pgkeep restore verification of cluster ${clusterName}: reads only its objects, may unseal the automation identity`,
    // Inline: one resource per cluster (a separate policy would be a second), so a deployment of
    // hundreds of clusters stays within CloudFormation's resources per stack.
    inlinePolicies: { verification: new iam.PolicyDocument({ statements }) },
  });
  acknowledgeWildcardResources(
    role,
    `the task restores any backup of cluster ${clusterName} (its prefix ${own} in ingest and in each target) and writes its report under ${reports}; the key names are not known in advance, and the cluster's prefix is the boundary`,
    ...objectArns,
    bucket.arnForObjects(`${reports}*`),
  );
  return role;
}
