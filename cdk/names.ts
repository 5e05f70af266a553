/**
 * Names that two stacks must agree on without a reference between them (a reference would make a
 * dependency cycle: the stateful key policy names the stateless verification role).
 */
import { Aws } from 'aws-cdk-lib';

/**
 * The ingest bucket's name, fixed by account and region so the pipeline stack can refer to it
 * without a CloudFormation export (exports block updates of the stateful stack, and they make
 * cdk-nag findings differ between construction and synthesis).
 */
export function ingestBucketName(pipelineName: string): string {
  return `${pipelineName}-ingest-${Aws.ACCOUNT_ID}-${Aws.REGION}`;
}

/**
 * The verification task role of one cluster: one role per cluster, so a task restoring cluster A
 * can read only A's objects. Region-qualified by its path, because IAM names are account-wide.
 */
export function verificationTaskRoleName(pipelineName: string, cluster: string): string {
  const name = `${pipelineName}-verify-${cluster}`;
  if (name.length > 64)
    throw new Error(
      `verification role name "${name}" is longer than IAM's 64 characters: shorten the pipeline name or the cluster name`,
    );
  return name;
}

/** The path of every verification task role (the key policy names the roles by ARN, path included). */
export function verificationTaskRolePath(): string {
  return `/pgkeep/${Aws.REGION}/`;
}

export function verificationTaskRoleArn(pipelineName: string, cluster: string): string {
  return `arn:${Aws.PARTITION}:iam::${Aws.ACCOUNT_ID}:role${verificationTaskRolePath()}${verificationTaskRoleName(pipelineName, cluster)}`;
}

export { METRIC_NAMESPACE, METRICS } from '../lambdas/lib/metrics.ts';
